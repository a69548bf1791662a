//! Linking by code from the outlet itself (`outlet-agent pair-code`): the
//! code outlives the QR round it was asked in, a withdrawn code sends the
//! agent back to waiting, and a code asked for while pairing is idle starts
//! a new round and links.

mod common;

use common::*;
use fake_whatsapp::Purpose;

/// `outlet-agent pair-code <phone>` against the running agent: the code, as
/// printed (`ABCD-1234`), and the whole output.
fn pair_code_cli(agent: &Agent, phone: &str) -> (String, String) {
    let config = agent.config.display().to_string();
    let (code, stdout, stderr) = run_cli(&["--config", &config, "pair-code", phone], &[]);
    assert_eq!(code, 0, "pair-code failed: {stdout}{stderr}");
    let printed = stdout.lines().next().unwrap_or_default().trim().to_string();
    (printed, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_outlives_its_qr_round_and_a_new_one_links_from_idle() {
    // One ref per round: the client shows it for its fixed 60 s, then the
    // QR codes have run out.
    let server = server_with(fake_whatsapp::ServerConfig {
        refs_per_pairing: 1,
        ..fake_whatsapp::ServerConfig::default()
    })
    .await;
    let mut agent = Agent::start(&server, &[]);
    agent.wait_state("pairing").await;

    let (first, output) = pair_code_cli(&agent, "+62 812-3456-7890");
    assert_eq!(first.len(), 9, "ABCD-1234: {output}");
    assert!(output.contains("+6281234567890"), "{output}");
    let offered = agent.wait_state("pairing_code").await;
    assert!(!offered.to_string().contains(&first.replace('-', "")));

    // The QR round ends under the code; the code (and its connection) stay.
    let exhausted = agent
        .wait_for("the QR round to end under the code", |h| {
            h["state"] == "pairing_code" && h["qr"].is_null()
        })
        .await;
    assert!(
        exhausted["pair_code"]["expires_at"].is_string(),
        "{exhausted}"
    );
    let registrations = |server: &fake_whatsapp::FakeServer| {
        server
            .stats()
            .attempts
            .iter()
            .filter(|a| a.purpose == Some(Purpose::Registration))
            .count()
    };

    // WhatsApp withdraws the code: nothing is left to link with, so the
    // agent waits for a new round instead of holding the connection.
    assert!(server.refresh_link_code());
    let idle = agent.wait_state("pairing_idle").await;
    assert!(
        idle["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("link code")),
        "{idle}"
    );
    assert_eq!(registrations(&server), 1);

    // A code asked for while idle starts a new round and links.
    let (second, _) = pair_code_cli(&agent, "081234567890");
    assert_ne!(first, second);
    agent.wait_state("pairing_code").await;
    server
        .phone()
        .enter_code(&second)
        .await
        .expect("the phone takes the second code");
    let connected = agent.wait_state("connected").await;
    assert_eq!(connected["phone"], "+6281234567890");
    assert_eq!(registrations(&server), 2);
    assert_eq!(server.stats().max_concurrent(), 1);
    let log = agent.log();
    for code in [&first, &second] {
        assert!(
            !log.contains(&code.replace('-', "")),
            "code in the log:\n{log}"
        );
    }
}
