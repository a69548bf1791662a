//! Linking by code from the outlet itself (`outlet-agent pair-code`): the
//! code outlives the QR round it was asked in, a withdrawn code sends the
//! agent back to waiting, and a code asked for while pairing is idle starts
//! a new round and links.

mod common;

use common::*;
use serde_json::json;

/// `outlet-agent pair-code <phone>` against the running agent: the code, as
/// printed (`ABCD-1234`), and the whole output. Run off the test's runtime
/// threads: the fake server shares them and must answer meanwhile.
async fn pair_code_cli(agent: &Agent, phone: &str) -> (String, String) {
    let config = agent.config.display().to_string();
    let phone = phone.to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(&["--config", &config, "pair-code", &phone], &[])
    })
    .await
    .expect("the CLI ran");
    assert_eq!(code, 0, "pair-code failed: {stdout}{stderr}");
    let printed = stdout.lines().next().unwrap_or_default().trim().to_string();
    (printed, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_outlives_its_qr_round_and_a_new_one_links_from_idle() {
    // One ref per round: the client shows it for its fixed 60 s, then the
    // QR codes have run out.
    let server = one_ref_server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.wait_state("pairing").await;

    let (first, output) = pair_code_cli(&agent, "+62 812-3456-7890").await;
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
    let (second, _) = pair_code_cli(&agent, "081234567890").await;
    assert_ne!(first, second);
    agent.wait_state("pairing_code").await;
    agent.link_by_code(&server, &second).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_numbers_and_few_codes_and_one_asked_right_after_a_logout_links() {
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[
            (
                "OUTLET_AGENT__PAIRING__PAIR_CODE_NUMBERS",
                r#"["+62 812-3456-7890"]"#,
            ),
            ("OUTLET_AGENT__PAIRING__MAX_PAIR_CODES_PER_HOUR", "1"),
        ],
    );
    agent.pair(&server).await;
    let ask = |phone: &str| json!({"command": "pair_code", "phone": phone});

    let linked = agent.request(ask("081234567890")).await.expect("answers");
    assert_error(&linked, "already linked");

    // What an HQ script does for a new phone: log out, then ask for a code
    // at once — before the new pairing connection is up.
    let out = agent
        .request(json!({"command": "logout", "confirm": true}))
        .await
        .expect("answers");
    assert_eq!(out["status"], "ok", "{out}");
    let other = agent.request(ask("0899-9999-9999")).await.expect("answers");
    assert_error(&other, "pair_code_numbers");
    let reply = agent.request(ask("081234567890")).await.expect("answers");
    assert_eq!(reply["status"], "ok", "{reply}");
    let code = reply["data"]["code"].as_str().expect("a code").to_string();
    agent.wait_state("pairing_code").await;
    // One code per hour here: a second is refused and the first stays.
    let again = agent.request(ask("081234567890")).await.expect("answers");
    assert_error(&again, "used up for this hour");
    agent.link_by_code(&server, &code).await;
    assert_eq!(server.stats().max_concurrent(), 1);
}

/// A code typed after the round's last QR expired still links, and the
/// outlet goes on to connect: being linked leaves nothing of the round to
/// run out. (Once the agent took the expired round for "QR codes ran out"
/// right after pair-success and sat in `pairing_idle`, linked, for the
/// cool-down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_typed_after_the_last_qr_expired_links_and_connects() {
    let server = one_ref_server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.wait_state("pairing").await;
    let (code, _) = pair_code_cli(&agent, "081234567890").await;
    agent
        .wait_for("the QR round to end under the code", |h| {
            h["state"] == "pairing_code" && h["qr"].is_null()
        })
        .await;

    server
        .phone()
        .enter_code(&code)
        .await
        .expect("the phone takes the code");
    let connected = agent
        .wait_for("connected after the code", |h| {
            assert_ne!(h["state"], "pairing_idle", "linked, yet idle: {h}");
            h["state"] == "connected"
        })
        .await;
    assert_eq!(connected["phone"], "+6281234567890");
    assert_eq!(server.stats().max_concurrent(), 1);
}
