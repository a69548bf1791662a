//! The dashboard over a large fleet: N outlets' retained `state`,
//! `availability` and `telemetry` (default 1000) on a private Mosquitto,
//! `outlet-agent fleet --serve` and Debian's headless Chromium.
//!
//! 1. Time to the first full table: from the dashboard's start until its
//!    API lists all N, and from opening the page until it shows N rows.
//! 2. The page's cost of one full render of N rows, layout included (it
//!    renders at most every 100 ms after a change, and once a second for
//!    the clocks).
//! 3. A change's way to the screen: from publishing one outlet's new
//!    `state` until its row shows it, over many changes.
//! 4. The dashboard's memory with N outlets and one page open.
//!
//! `cargo bench -p outlet-agent --bench dashboard`; `BENCH_OUTLETS`
//! (1000) and `BENCH_CHANGES` (50) change the sizes.

#[path = "../tests/common/browser.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dashboard.rs"]
mod dashboard;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::time::{Duration, Instant};

use browser::Browser;
use dashboard::Dashboard;
use mqtt::{Broker, Subscriber};
use serde_json::json;
use support::{env_u64, proc_field};

fn state(id: &str, i: usize, state: &str) -> String {
    let now = chrono::Utc::now();
    json!({
        "outlet": id, "state": state, "since": now - chrono::Duration::minutes(i as i64 % 600),
        "phone": format!("+62812{:08}", i), "push_name": format!("Outlet {i}"), "attempt": 0,
        "next_retry_at": null, "last_error": null, "last_connected_at": now,
        "last_disconnect": null, "qr": null, "display": "ok", "mqtt": "ok",
        "messages": { "last_message_in_at": now, "last_message_out_at": now,
                      "inbox_pending": 0, "outbox_pending": 0, "inbox_full": false },
        "version": "0.1.0", "valid_until": now + chrono::Duration::hours(1),
    })
    .to_string()
}

fn telemetry(i: usize) -> String {
    json!({
        "at": chrono::Utc::now(), "uptime_secs": 3600 + i, "rss_bytes": 14_000_000 + i * 1000,
        "cpu_temp_c": 48.5, "disk_free_bytes": 20_000_000_000u64, "db_bytes": 180_000,
        "reconnects": 0, "mqtt_reconnects": 0, "mqtt_queue": 0,
    })
    .to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

async fn run() {
    let n = usize::try_from(env_u64("BENCH_OUTLETS", 1000)).unwrap_or(1000);
    let changes = usize::try_from(env_u64("BENCH_CHANGES", 50)).unwrap_or(50);
    let broker = Broker::start("allow_anonymous true\nset_tcp_nodelay true").await;
    let url = broker.url(false);
    let fleet = "bench";

    // The fleet's retained messages, as N agents would have left them.
    let publisher = Subscriber::connect(&url, &[]).await;
    let mut check = Subscriber::connect(&url, &[&format!("{fleet}/+/telemetry")]).await;
    for i in 0..n {
        let id = format!("o-{i:04}");
        let health = if i % 50 == 7 {
            "reconnecting"
        } else {
            "connected"
        };
        let availability = if i % 97 == 3 { "offline" } else { "online" };
        publisher
            .publish(&format!("{fleet}/{id}/availability"), availability, true)
            .await;
        publisher
            .publish(&format!("{fleet}/{id}/state"), state(&id, i, health), true)
            .await;
        publisher
            .publish(&format!("{fleet}/{id}/telemetry"), telemetry(i), true)
            .await;
    }
    for _ in 0..n {
        check
            .wait_for(
                "the fleet's retained messages",
                Duration::from_secs(120),
                |_| true,
            )
            .await;
    }

    // 1. First full table: the API, then the page.
    let started = Instant::now();
    let dash = Dashboard::start(&url, &["127.0.0.1:0", "--prefix", fleet]);
    let get = dash.get("/api/outlets", "");
    let api_full = loop {
        let (status, _, body) = dash.http(&get).await;
        let listed = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["outlets"].as_array().map(Vec::len))
            .unwrap_or(0);
        if status == 200 && listed == n {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the API lists {listed} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, _, body) = dash.http(&get).await;
    let api_bytes = body.len();

    let mut browser = Browser::open("about:blank", 1500, 900).await;
    let opened = Instant::now();
    browser
        .call("Page.navigate", json!({ "url": dash.url }))
        .await;
    browser
        .wait_until(
            "every outlet on the page",
            &format!("document.querySelectorAll('#outlets tbody tr[data-outlet]').length === {n}"),
        )
        .await;
    let page_full = opened.elapsed();

    // 2. One full render of N rows.
    let render_ms = browser
        .eval(
            "(() => { const t = performance.now(); \
               for (let i = 0; i < 20; i++) { lastRows = null; render(); void document.body.offsetHeight; } \
               return (performance.now() - t) / 20; })()",
        )
        .await
        .as_f64()
        .unwrap_or(f64::NAN);

    // 3. One outlet's change to its row on the screen.
    let mut latencies = Vec::with_capacity(changes);
    for k in 0..changes {
        let i = (k * 37) % n;
        let id = format!("o-{i:04}");
        let to = if k % 2 == 0 { "paused" } else { "pairing" };
        let sent = Instant::now();
        publisher
            .publish(&format!("{fleet}/{id}/state"), state(&id, i, to), true)
            .await;
        browser
            .eval(&format!(
                "new Promise((done) => {{ const check = () => {{ \
                   const r = document.querySelector('#outlets tbody tr[data-outlet=\"{id}\"] [data-state=\"{to}\"]'); \
                   if (r) done(true); else setTimeout(check, 2); }}; check(); }})"
            ))
            .await;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // 4. Memory.
    let rss_kib = proc_field(dash.pid(), "status", "VmRSS:");

    println!(
        "## The dashboard over {n} outlets ({} build)\n",
        support::build_kind()
    );
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| from start until `/api/outlets` lists all {n} | {:.2} s ({} KiB of JSON) |",
        api_full.as_secs_f64(),
        api_bytes / 1024
    );
    println!(
        "| from opening the page until it shows {n} rows | {:.2} s |",
        page_full.as_secs_f64()
    );
    println!("| one full render of {n} rows in Chromium, layout included | {render_ms:.1} ms |");
    println!(
        "| a published change until its row shows it ({changes} changes) | median {:.0} ms, p95 {:.0} ms, max {:.0} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| the dashboard's RSS with {n} outlets and one page open | {:.1} MiB |",
        rss_kib as f64 / 1024.0
    );
    drop(browser);
    drop(dash);
    drop(broker);
}

fn main() {
    support::block_on(run());
}
