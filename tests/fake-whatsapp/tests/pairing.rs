//! Pairing a plain whatsapp-rust client through the fake server's QR refs and
//! the simulated phone, then logging in again from the saved store.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_whatsapp::{FakeServer, HandshakeKind, Purpose, ScanError, ServerConfig, ServerEvent};
use whatsapp_rust::types::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_client_pairs_by_qr_then_connects() {
    let server = server().await;
    let started = Instant::now();
    let mut client = start_client(&server, memory_store()).await;

    let qr = client.next_qr().await;
    let qr_at = started.elapsed();
    assert_eq!(qr.split(',').count(), 5, "QR has five fields");

    let paired = server.phone().scan(&qr).await.expect("phone scans the QR");
    let expected_jid = format!(
        "{}:{}@s.whatsapp.net",
        server.config().account.phone,
        paired.device_id
    );
    assert_eq!(paired.jid, expected_jid);

    let (jid, business_name) = client
        .wait_for("PairSuccess", |e| match e {
            Event::PairSuccess(p) => Some((p.id.to_string(), p.business_name.clone())),
            _ => None,
        })
        .await;
    let paired_at = started.elapsed();
    assert_eq!(
        jid, expected_jid,
        "the client learns the configured phone number"
    );
    assert_eq!(Some(business_name), server.config().account.business_name);

    client.connected().await;
    let connected_at = started.elapsed();
    eprintln!("timings: QR {qr_at:?}, pair-success {paired_at:?}, connected {connected_at:?}");

    let stats = server.stats();
    let registration: Vec<_> = stats
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(Purpose::Registration))
        .collect();
    let logins = stats
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(Purpose::Login))
        .count();
    assert_eq!(registration.len(), 1, "{:?}", stats.attempts);
    // After the 515 the client logs in again. whatsapp-rust 0.7 sometimes
    // drops that first login and makes one more (its pair-success task can
    // re-arm "expected disconnect" after the restart); never more. In that
    // race its own reconnect loop may open the extra login before the first
    // one has closed, so the plain library client can briefly hold two; the
    // agent switches that loop off and builds a fresh client per attempt
    // (ARCHITECTURE.md), and its tests hold it to one.
    assert!((1..=2).contains(&logins), "{:?}", stats.attempts);
    // Two at most, even with one login: the client closes the registration
    // connection and opens the login at once, and the server can notice the
    // close a moment after the new connection (seen once: registration
    // closed at 18 ms, login opened at 15 ms). The agent waits for a
    // session's end before the next attempt; its end-to-end tests hold it
    // to one.
    assert!(stats.max_concurrent() <= 2, "{:?}", stats.attempts);
    assert_eq!(server.phone().linked_devices(), vec![expected_jid.clone()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .stats()
        .device(&expected_jid)
        .map(|d| d.stats.current)
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "not one live connection: {:?}",
            server.stats().device(&expected_jid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_client_logs_in_from_its_store_without_a_qr() {
    let server = server().await;
    let Paired {
        mut client,
        store,
        jid,
    } = paired_client(&server).await;
    client.stop().await;

    let mut events = server.subscribe();
    let started = Instant::now();
    let mut second = start_client(&server, store).await;
    let handshake = server_event(&mut events, "the second client's handshake", |e| {
        matches!(e, ServerEvent::Handshake { .. })
    })
    .await;
    assert_eq!(
        handshake,
        ServerEvent::Handshake {
            connection: handshake.connection().expect("has a connection"),
            kind: HandshakeKind::Ik,
            purpose: Purpose::Login,
        },
        "a saved device resumes with Noise IK"
    );
    let seen = second
        .wait_for("Connected or a QR", |e| match e {
            Event::Connected(_) => Some("connected"),
            Event::PairingQrCode(_) => Some("qr"),
            _ => None,
        })
        .await;
    assert_eq!(seen, "connected", "no QR after a restart");
    eprintln!("restart to Connected: {:?}", started.elapsed());
    let logged_in = server_event(&mut events, "login", |e| {
        matches!(e, ServerEvent::LoggedIn { .. })
    })
    .await;
    assert!(matches!(logged_in, ServerEvent::LoggedIn { jid: j, .. } if j == jid));
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_scanned_after_its_ref_expired_is_refused() {
    init_logs();
    let lifetime = Duration::from_millis(300);
    let server = FakeServer::start(ServerConfig {
        first_ref_lifetime: lifetime,
        ref_lifetime: lifetime,
        ..ServerConfig::default()
    })
    .await
    .expect("server starts");
    let mut client = start_client(&server, memory_store()).await;
    let qr = client.next_qr().await;

    // Time has to pass for a code to expire: this waits out the server's
    // ref lifetime, it does not wait for an event.
    tokio::time::sleep(lifetime * 2).await;
    assert_eq!(server.phone().scan(&qr).await, Err(ScanError::Expired));
    assert!(
        server.phone().linked_devices().is_empty(),
        "nothing was paired"
    );
    assert!(
        client
            .events
            .try_recv()
            .map_or(true, |e| !matches!(*e, Event::PairSuccess(_))),
        "the client saw no pair-success"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_that_were_never_issued_or_belong_to_a_closed_connection_are_refused() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let qr = client.next_qr().await;

    let mut fields: Vec<&str> = qr.split(',').collect();
    fields[0] = "2@not-a-ref-this-server-issued";
    let forged = fields.join(",");
    assert_eq!(
        server.phone().scan(&forged).await,
        Err(ScanError::UnknownRef)
    );
    assert!(matches!(
        server.phone().scan("https://example.invalid").await,
        Err(ScanError::Malformed(_))
    ));

    // The client goes away: its refs die with its connection.
    let mut events = server.subscribe();
    client.stop().await;
    if server.stats().live_connections > 0 {
        server_event(&mut events, "the connection to close", |e| {
            matches!(e, ServerEvent::Closed { .. })
        })
        .await;
    }
    assert_eq!(server.phone().scan(&qr).await, Err(ScanError::Superseded));
}

/// Draws `payload` as a QR (4 px per module, 4-module quiet zone) into a PNG.
fn write_qr_png(payload: &str, path: &std::path::Path) {
    let code = qrcode::QrCode::new(payload.as_bytes()).expect("payload fits a QR");
    let modules = code.width();
    let colors = code.to_colors();
    let (scale, quiet) = (4, 4);
    let side = (modules + 2 * quiet) * scale;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..scale {
                    let row = ((y + quiet) * scale + dy) * side;
                    let col = (x + quiet) * scale;
                    pixels[row + col..row + col + scale].fill(0);
                }
            }
        }
    }
    let file = std::fs::File::create(path).expect("create png");
    let side = u32::try_from(side).expect("small image");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(&pixels).expect("png data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_scans_the_pixels_of_a_rendered_qr() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let qr = client.next_qr().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("screen.png");
    write_qr_png(&qr, &path);

    let read = fake_whatsapp::phone::decode_qr_png(&path).expect("QR readable");
    assert_eq!(read, qr);
    let reply =
        fake_whatsapp::control::handle_line(&server, &format!("scan-png {}", path.display())).await;
    assert_eq!(reply["ok"], true, "{reply}");
    client
        .wait_for("PairSuccess", |e| {
            matches!(e, Event::PairSuccess(_)).then_some(())
        })
        .await;
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_field_qr_of_an_older_client_links_too() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let qr = client.next_qr().await;
    // Older clients show no platform field; the phone reads the rest.
    let four: Vec<&str> = qr.split(',').take(4).collect();
    let paired = server
        .phone()
        .scan(&four.join(","))
        .await
        .expect("the phone scans a 4-field QR");
    client.connected().await;
    assert_eq!(server.phone().linked_devices(), vec![paired.jid]);
    client.stop().await;
}
