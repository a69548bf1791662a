//! `outlet-agent fleet --serve`: the dashboard in a real browser (Debian's
//! headless Chromium), fed by real agents over a real broker.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/dashboard.rs"]
mod dashboard;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::path::PathBuf;

use browser::Browser;
use common::*;
use dashboard::Dashboard;
use mqtt::*;
use serde_json::{Value, json};

/// An agent publishing under `<fleet>/<id>`.
fn outlet_env(fleet: &str, id: &str) -> Vec<(String, String)> {
    vec![
        ("OUTLET_AGENT__OUTLET__ID".into(), id.into()),
        ("OUTLET_AGENT__MQTT__BROKER".into(), shared_broker()),
        (
            "OUTLET_AGENT__MQTT__TOPIC_PREFIX".into(),
            format!("{fleet}/{{outlet_id}}"),
        ),
        (
            "OUTLET_AGENT__MQTT__DISCOVERY_PREFIX".into(),
            format!("ha-{fleet}"),
        ),
    ]
}

fn start_outlet(server: &fake_whatsapp::FakeServer, fleet: &str, id: &str) -> Agent {
    let env = outlet_env(fleet, id);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Agent::start(server, &env)
}

/// JavaScript: the row of outlet `id`.
fn row(id: &str) -> String {
    format!("document.querySelector('#outlets tbody tr[data-outlet=\"{id}\"]')")
}

/// JavaScript: `id`'s row shows session state `state`.
fn row_state(id: &str, state: &str) -> String {
    format!(
        "(() => {{ const r = {}; return !!r && !!r.querySelector('[data-state=\"{state}\"]'); }})()",
        row(id)
    )
}

/// JavaScript: `id`'s row shows health `health`.
fn row_health(id: &str, health: &str) -> String {
    format!(
        "(() => {{ const r = {}; return !!r && r.classList.contains('health-{health}'); }})()",
        row(id)
    )
}

/// Opens `id`'s detail view, as a click on its row does.
async fn select(browser: &mut Browser, id: &str) {
    browser
        .eval(&format!(
            "{}.dispatchEvent(new MouseEvent('mousedown', {{ bubbles: true, button: 0 }}))",
            row(id)
        ))
        .await;
    browser
        .wait_until(
            &format!("{id}'s detail view"),
            &format!(
                "!document.getElementById('detail').hidden && document.getElementById('detail').dataset.outlet === '{id}'"
            ),
        )
        .await;
}

/// Clicks an action button and waits for the response the page shows.
async fn click_action(browser: &mut Browser, action: &str) -> Value {
    browser
        .eval(&format!(
            "document.getElementById('response').dataset.status = ''; \
             document.querySelector('#actions [data-action=\"{action}\"]').click()"
        ))
        .await;
    browser
        .wait_until(
            &format!("the response to {action}"),
            "['ok', 'error'].includes(document.getElementById('response').dataset.status)",
        )
        .await;
    browser
        .eval(
            "({ status: document.getElementById('response').dataset.status, \
                title: document.getElementById('response-title').textContent, \
                body: document.getElementById('response-body').textContent })",
        )
        .await
}

async fn count(browser: &mut Browser, card: &str) -> String {
    browser
        .eval(&format!(
            "document.getElementById('count-{card}').textContent"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Where to keep screenshots (docs/ when making them), if anywhere.
fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("OUTLET_DASHBOARD_SCREENSHOTS").map(PathBuf::from)
}

/// The page lists a running fleet, follows a change made elsewhere without
/// a reload, and its buttons reach the agents and show their answers:
/// resume, pair by code (the code shown), logout only after confirmation.
/// A killed agent turns offline on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_fleet_live_and_its_buttons_reach_the_agents() {
    let server = server().await;
    let fleet = unique("dash");
    let mut jkt = start_outlet(&server, &fleet, "jkt-01");
    jkt.pair(&server).await;
    let mut sby = start_outlet(&server, &fleet, "sby-02");
    sby.pair(&server).await;
    let mut bdg = start_outlet(&server, &fleet, "bdg-03");
    bdg.wait_state("pairing").await;

    let dashboard = Dashboard::start(&shared_broker(), &["127.0.0.1:0", "--prefix", &fleet]);
    let mut browser = Browser::open(&dashboard.url, 1500, 820).await;
    browser
        .wait_until(
            "three outlets on the page",
            "document.querySelectorAll('#outlets tbody tr[data-outlet]').length === 3",
        )
        .await;
    for id in ["jkt-01", "sby-02"] {
        browser
            .wait_until(&format!("{id} connected"), &row_health(id, "connected"))
            .await;
    }
    browser
        .wait_until("bdg-03 waiting to pair", &row_state("bdg-03", "pairing"))
        .await;
    assert_eq!(count(&mut browser, "all").await, "3");
    assert_eq!(count(&mut browser, "connected").await, "2");
    assert_eq!(count(&mut browser, "attention").await, "1");
    let page = browser.eval("document.body.innerText").await;
    let page = page.as_str().unwrap_or_default();
    assert!(
        !page.contains("6281234567890"),
        "a full number on the page:\n{page}"
    );

    // A change made elsewhere (HQ's own MQTT client) appears without a
    // reload: the marker set on this page survives.
    browser.eval("window.sameDocument = true").await;
    let mut hq = Subscriber::connect(&shared_broker(), &[&format!("{fleet}/+/response/+")]).await;

    // HQ's audit (`fleet audit`) finds a gap at sby-02: the page says so
    // in its row, and the filter finds it.
    hq.publish(
        &format!("{fleet}/sby-02/audit"),
        r#"{"last_seq":40,"received":35,"replayed":2,"missing":3,"lost":0,"at":"2026-12-07T21:00:00Z"}"#,
        true,
    )
    .await;
    browser
        .wait_until(
            "sby-02's gap on the page",
            &format!(
                "(() => {{ const c = {}?.querySelector('td[data-records]'); return !!c && c.dataset.records === 'gap' && c.textContent === '3 missing'; }})()",
                row("sby-02")
            ),
        )
        .await;
    browser
        .eval(
            "document.getElementById('filter').value = 'missing';              document.getElementById('filter').dispatchEvent(new Event('input'))",
        )
        .await;
    browser
        .wait_until(
            "only the outlet with a gap",
            "document.querySelectorAll('#outlets tbody tr[data-outlet]').length === 1              && !!document.querySelector('#outlets tbody tr[data-outlet=\"sby-02\"]')",
        )
        .await;
    browser
        .eval(
            "document.getElementById('filter').value = '';              document.getElementById('filter').dispatchEvent(new Event('input'))",
        )
        .await;
    browser
        .wait_until(
            "three outlets again",
            "document.querySelectorAll('#outlets tbody tr[data-outlet]').length === 3",
        )
        .await;
    let paused = hq
        .request(&format!("{fleet}/jkt-01"), "pause", json!({}))
        .await;
    assert_eq!(paused["status"], "ok", "{paused}");
    browser
        .wait_until("jkt-01 paused on the page", &row_state("jkt-01", "paused"))
        .await;
    assert_eq!(
        browser.eval("window.sameDocument === true").await,
        json!(true)
    );

    // A button on the page reaches the agent, and its answer is shown.
    select(&mut browser, "jkt-01").await;
    let resumed = click_action(&mut browser, "resume").await;
    assert_eq!(resumed["status"], "ok", "{resumed}");
    jkt.wait_state("connected").await;
    browser
        .wait_until("jkt-01 connected again", &row_state("jkt-01", "connected"))
        .await;

    // Pair by code: the page shows the code the agent got from WhatsApp,
    // and the outlet links with it.
    select(&mut browser, "bdg-03").await;
    browser
        .eval(
            "document.getElementById('pair-phone').value = '0812-3456-7890'; \
             document.getElementById('response').dataset.status = ''; \
             document.getElementById('pair-form').requestSubmit()",
        )
        .await;
    let code = browser
        .wait_until(
            "the pairing code",
            "document.getElementById('pair-code').hidden ? '' : document.getElementById('pair-code').textContent",
        )
        .await;
    let code = code.as_str().expect("a code").to_string();
    assert_eq!(code.len(), 8, "{code}");
    if let Some(dir) = screenshot_dir() {
        browser
            .screenshot(&dir.join("dashboard-pair-code.png"))
            .await;
    }
    bdg.link_by_code(&server, &code).await;
    browser
        .wait_until("bdg-03 connected", &row_health("bdg-03", "connected"))
        .await;

    // A dead agent is unmistakable: its will turns it offline.
    sby.signal("KILL");
    sby.wait_exit().await;
    browser
        .wait_until("sby-02 offline", &row_health("sby-02", "offline"))
        .await;
    assert_eq!(count(&mut browser, "offline").await, "1");

    // Another outlet cannot answer for this one: a forged answer to the
    // page's request to the dead sby-02, published on jkt-01's response
    // topic with the request's transaction (read off the broker, as only a
    // looser ACL than docs/deploy.md's allows), is refused, and the page
    // says sby-02 did not answer.
    let mut forger =
        Subscriber::connect(&shared_broker(), &[&format!("{fleet}/sby-02/request/+")]).await;
    select(&mut browser, "sby-02").await;
    browser
        .eval(
            "document.getElementById('response').dataset.status = ''; \
             document.querySelector('#actions [data-action=\"status\"]').click()",
        )
        .await;
    let asked = forger
        .wait_for("the page's request to sby-02", DEADLINE, |m| {
            m.topic.ends_with("/request/status")
        })
        .await
        .json();
    forger
        .publish(
            &format!("{fleet}/jkt-01/response/status"),
            json!({"status": "ok", "transaction": asked["transaction"], "data": {"state": "forged"}})
                .to_string(),
            false,
        )
        .await;
    browser
        .wait_until(
            "the page's answer to sby-02's status",
            "['ok', 'error'].includes(document.getElementById('response').dataset.status)",
        )
        .await;
    let shown = browser
        .eval(
            "({ status: document.getElementById('response').dataset.status, \
                body: document.getElementById('response-body').textContent })",
        )
        .await;
    assert_eq!(shown["status"], "error", "{shown}");
    assert!(!shown.to_string().contains("forged"), "{shown}");
    assert!(shown.to_string().contains("sby-02"), "{shown}");
    if let Some(dir) = screenshot_dir() {
        browser
            .eval("document.getElementById('detail-close').click()")
            .await;
        browser.screenshot(&dir.join("dashboard.png")).await;
    }

    // Logout asks first; declined, nothing is sent.
    select(&mut browser, "jkt-01").await;
    browser
        .eval(
            "window.confirm = () => false; document.getElementById('response').hidden = true; \
             document.querySelector('#actions [data-action=\"logout\"]').click()",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('response').hidden")
            .await,
        json!(true),
        "a declined logout sent a request"
    );
    assert_eq!(jkt.status().await.expect("status")["state"], "connected");
    browser.eval("window.confirm = () => true").await;
    let logged_out = click_action(&mut browser, "logout").await;
    assert_eq!(logged_out["status"], "ok", "{logged_out}");
    jkt.wait_state("logged_out").await;
    browser
        .wait_until(
            "jkt-01 logged out on the page",
            &row_state("jkt-01", "logged_out"),
        )
        .await;

    assert!(
        !dashboard.log_text().contains("6281234567890"),
        "a full number in the dashboard's log"
    );
    drop(browser);
    clear_retained(
        &shared(),
        &[&format!("{fleet}/#"), &format!("ha-{fleet}/#")],
    )
    .await;
}

/// Beyond loopback the dashboard needs a token: it does not start without
/// one, and with one, the data and the actions are refused until the token
/// is shown (header or the login's cookie). On loopback a foreign `Host`
/// is refused, and bad requests are answered, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_dashboard_needs_its_token() {
    let fleet = unique("dash-token");
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let fleet = fleet.clone();
        move || {
            run_cli(
                &["fleet", "--serve", "0.0.0.0:0", "--prefix", &fleet],
                &[("OUTLET_AGENT__MQTT__BROKER", &shared_broker())],
            )
        }
    })
    .await
    .expect("fleet runs");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");

    let dir = tempfile::tempdir().expect("a dir");
    let token_file = dir.path().join("token");
    let token = "hq-dashboard-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let token_path = token_file.display().to_string();
    let dashboard = Dashboard::start(
        &shared_broker(),
        &["0.0.0.0:0", "--prefix", &fleet, "--token-file", &token_path],
    );

    let (status, _, body) = dashboard.http(&dashboard.get("/", "")).await;
    assert_eq!(status, 200, "the page itself loads");
    assert!(body.contains("Outlet fleet"), "{body}");
    for path in ["/api/outlets", "/events"] {
        let (status, _, _) = dashboard.http(&dashboard.get(path, "")).await;
        assert_eq!(status, 401, "{path} without the token");
    }
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, _, body) = dashboard
        .http(&dashboard.get("/api/outlets", &bearer))
        .await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    assert!(doc["outlets"].is_array(), "{doc}");
    let action = "/api/outlets/x/pause";
    let (status, _, _) = dashboard
        .http(&dashboard.post(action, "X-Outlet-Dashboard: 1\r\n", "{}"))
        .await;
    assert_eq!(status, 401, "an action without the token");
    let (status, _, _) = dashboard.http(&dashboard.post(action, &bearer, "{}")).await;
    assert_eq!(status, 403, "an action without the page's header");
    let (status, _, body) = dashboard
        .http(&dashboard.post(action, &format!("{bearer}X-Outlet-Dashboard: 1\r\n"), "{}"))
        .await;
    assert_eq!(status, 404, "no such outlet: {body}");

    let (status, _, _) = dashboard
        .http(&dashboard.post("/api/login", "", r#"{"token":"guess-guess-guess-guess"}"#))
        .await;
    assert_eq!(status, 401);
    let (status, head, _) = dashboard
        .http(&dashboard.post("/api/login", "", &format!(r#"{{"token":"{token}"}}"#)))
        .await;
    assert_eq!(status, 200);
    let set_cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: "))
        .expect("a cookie")
        .to_string();
    let cookie = set_cookie["set-cookie: ".len()..]
        .split(';')
        .next()
        .expect("a cookie")
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Max-Age=43200"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(token),
        "the cookie is a session, not the token"
    );
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (status, _, _) = dashboard
        .http(&dashboard.get("/api/outlets", &with_cookie))
        .await;
    assert_eq!(status, 200, "the login's cookie opens the data");
    let (status, _, _) = dashboard
        .http(&dashboard.get(
            "/api/outlets",
            &format!("Cookie: outlet_dashboard={token}\r\n"),
        ))
        .await;
    assert_eq!(status, 401, "the token itself is no cookie");

    // Bad requests get an answer; the dashboard stays up.
    let (status, _, _) = dashboard.http("NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status, 400);
    let (status, _, _) = dashboard
        .http(&dashboard.post("/api/login", "", &"x".repeat(20_000)))
        .await;
    assert_eq!(status, 413);

    // In a real browser: the page asks for the token, then shows the fleet.
    let mut browser = Browser::open(&dashboard.url, 1000, 700).await;
    browser
        .wait_until("the login", "!document.getElementById('login').hidden")
        .await;
    browser
        .eval(&format!(
            "document.getElementById('login-token').value = '{token}'; \
             document.getElementById('login-form').requestSubmit()"
        ))
        .await;
    browser
        .wait_until(
            "the live feed after the login",
            "document.getElementById('login').hidden && document.getElementById('feed').textContent === 'live'",
        )
        .await;

    // Wrong tokens: a burst, then 429 for this address, even for the
    // right token (the limit must not answer a right guess), while an
    // open session goes on working.
    for _ in 0..4 {
        let (status, _, _) = dashboard
            .http(&dashboard.post("/api/login", "", r#"{"token":"guess-guess-guess-guess"}"#))
            .await;
        assert_eq!(status, 401);
    }
    let (status, head, _) = dashboard
        .http(&dashboard.post("/api/login", "", &format!(r#"{{"token":"{token}"}}"#)))
        .await;
    assert_eq!(status, 429, "out of tries: {head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let (status, _, _) = dashboard
        .http(&dashboard.get("/api/outlets", &bearer))
        .await;
    assert_eq!(status, 429, "a bearer token is a try too");
    let (status, _, _) = dashboard
        .http(&dashboard.get("/api/outlets", &with_cookie))
        .await;
    assert_eq!(status, 200, "a session goes on");
    let (status, _, _) = dashboard
        .http(&dashboard.post("/api/logout", &with_cookie, ""))
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = dashboard
        .http(&dashboard.get("/api/outlets", &with_cookie))
        .await;
    assert_eq!(status, 401, "a session ends at logout");
    drop(browser);
    drop(dashboard);

    // Loopback without a token: only its own Host is served.
    let local = Dashboard::start(&shared_broker(), &["127.0.0.1:0", "--prefix", &fleet]);
    let (status, _, _) = local.http(&local.get("/api/outlets", "")).await;
    assert_eq!(status, 200, "loopback needs no token");
    let rebound = format!(
        "GET /api/outlets HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        local.port
    );
    let (status, _, _) = local.http(&rebound).await;
    assert_eq!(status, 421, "a foreign Host (DNS rebinding) is refused");
}
