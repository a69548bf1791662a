//! What the phone says at pairing is on disk before the first login, in
//! every pairing: the push name from pair-success (`<biz name>`). A device
//! record without it sends every later login of whatsapp-rust down its
//! fresh-pairing path, which waits 10 s for an app-state key share.

mod common;

use common::*;

/// The name was lost in about one pairing of three: six in a row would
/// all keep it by chance about one time in eleven.
const PAIRINGS: usize = 6;

/// The library's debug line for the slow path ("Starting Initial App State
/// Sync (flag_set=…, needs_pushname=…)"), logged only when it is taken.
const SLOW_PATH: &str = "Starting Initial App State Sync";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pairing_keeps_the_push_name_and_no_login_waits_for_it() {
    let server = server().await;
    for pairing in 1..=PAIRINGS {
        let mut agent = Agent::start(
            &server,
            &[("RUST_LOG", "info,outlet_agent=debug,Client/AppState=debug")],
        );
        let connected = agent.pair(&server).await;
        assert_eq!(
            connected["push_name"], "Outlet Jakarta",
            "pairing {pairing}"
        );
        assert!(agent.stop().await.success());
        let device = agent.stored_device().expect("a device record");
        assert_eq!(
            device["push_name"], "Outlet Jakarta",
            "pairing {pairing}: the device record keeps the push name"
        );

        agent.spawn();
        let restarted = agent.wait_state("connected").await;
        assert_eq!(
            restarted["push_name"], "Outlet Jakarta",
            "pairing {pairing}"
        );
        assert!(agent.stop().await.success());
        let log = agent.log();
        assert!(
            !log.contains(SLOW_PATH),
            "pairing {pairing}: a login took the fresh-pairing path\n{log}"
        );
    }
    assert_eq!(server.stats().max_concurrent(), 1);
}
