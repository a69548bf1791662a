//! Start-up failures: a second agent, a bad config, a corrupt store, an
//! insecure build pointed at the real WhatsApp.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_data_dir_exits_with_code_3() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.wait_state("pairing").await;
    let config = agent.config.display().to_string();
    let (code, _, stderr) = run_cli(&["run", "--config", &config], &[]);
    assert_eq!(code, 3, "{stderr}");
    let pid = agent.child.as_ref().expect("running").id();
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "names the other agent: {stderr}"
    );
    assert_eq!(
        agent.status().await.expect("first still runs")["state"],
        "pairing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_exits_2_naming_the_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[outlet]\nid = \"x\"\n\n[reconnect]\nmax_delay = 10\n",
    )
    .expect("write");
    let path = path.display().to_string();
    for command in ["run", "check-config"] {
        let (code, _, stderr) = run_cli(&[command, "--config", &path], &[]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains("line 5") && stderr.contains("max_delay"),
            "{stderr}"
        );
        assert!(stderr.contains("agent.toml"), "{stderr}");
    }
    let (code, _, stderr) = run_cli(
        &["check-config", "--config", &path],
        &[("OUTLET_AGENT__RECONNECT__BOGUS", "1")],
    );
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_resolved_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "ws://127.0.0.1:9/ws/chat", "");
    let config = config.display().to_string();
    let (code, stdout, stderr) = run_cli(
        &["check-config", "--config", &config],
        &[("OUTLET_AGENT__OUTLET__ID", "jkt-07")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("id = \"jkt-07\""), "{stdout}");
    assert!(
        stdout.contains("max_delay_secs = 300"),
        "defaults are shown: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_session_db_is_moved_aside_and_pairing_starts() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("session.db"), vec![0x5a; 8192]).expect("garbage");
    write_config(&dir, &server.url(), "");
    let mut agent = Agent::start_in(dir.clone(), &server);
    let health = agent.wait_state("pairing").await;
    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("moved to"), "reported: {health}");
    let moved: Vec<_> = std::fs::read_dir(&data)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("session.db.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1, "the bad file is kept aside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_build_says_so_and_refuses_the_real_endpoint() {
    let (code, stdout, _) = run_cli(&["version"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("certificate-chain verification: SKIPPED"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "wss://web.whatsapp.com/ws/chat", "");
    let config = config.display().to_string();
    let (code, _, stderr) = run_cli(&["run", "--config", &config], &[]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("web.whatsapp.com"), "{stderr}");
}

/// Under systemd the lines go to journald: no timestamp of their own, and
/// the syslog priority in front so `journalctl -p warning` finds warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_every_line_carries_its_priority_and_no_timestamp() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[("JOURNAL_STREAM", "8:4242")]);
    agent.wait_state("pairing").await;
    assert_eq!(agent.stop().await.code(), Some(0));
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority: {line:?}\n{log}"));
        assert!(
            !rest.trim_start().starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp of its own: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "colour codes: {line:?}");
    }
    // The test build's warning, and the start-up line.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("TEST BUILD")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("running")),
        "{log}"
    );
}
