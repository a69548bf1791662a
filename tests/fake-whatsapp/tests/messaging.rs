//! Real end-to-end encrypted messages between a plain whatsapp-rust client
//! and the fake server's contacts and phone.

mod common;
#[path = "common/contacts.rs"]
mod contacts;

use std::time::Instant;

use common::*;
use contacts::*;
use fake_whatsapp::{EncType, ServerEvent};
use wacore::proto_helpers::MessageBuilderExt as _;
use waproto::whatsapp as wa;

const BUDI: &str = "6281111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_both_ways_with_receipts() {
    let server = server().await;
    let started = Instant::now();
    let mut paired = paired_client(&server).await;
    let connected_after = started.elapsed();
    eprintln!("connected after {connected_after:?}");

    // Contact → outlet: a pkmsg (the session is new, and stays
    // unconfirmed until the outlet answers, as in Signal).
    let mut events = server.subscribe();
    let contacts = server.contacts();
    let first = contacts
        .send_text(BUDI, "halo, masih buka?")
        .await
        .expect("sent");
    let enc = server_pick(&mut events, "first to device", |e| match e {
        ServerEvent::MessageToDevice { id, enc, .. } if *id == first => Some(*enc),
        _ => None,
    })
    .await;
    assert_eq!(enc, EncType::Pkmsg);
    let got = messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await;
    assert_eq!(got[0].id, first);
    assert_eq!(got[0].text().as_deref(), Some("halo, masih buka?"));

    // Outlet → contact: the contact decrypts it and sends receipts back.
    let sent = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("masih, silakan"))
        .await
        .expect("client sends");
    let entry = server_pick(&mut events, "contact decrypts", |e| match e {
        ServerEvent::Decrypted { entry, .. } if entry.id == sent.message_id => Some(entry.clone()),
        _ => None,
    })
    .await;
    assert_eq!(entry.text.as_deref(), Some("masih, silakan"));
    assert_eq!(entry.kind, "text");
    let inbox = contacts.inbox(BUDI).expect("inbox");
    assert!(inbox.iter().any(|e| e.id == sent.message_id));

    paired
        .client
        .wait_for("a read receipt", |e| match e {
            whatsapp_rust::types::events::Event::Receipt(r)
                if r.message_ids.contains(&sent.message_id)
                    && format!("{:?}", r.r#type) == "Read" =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    // Now that the outlet answered on the session, the contact sends `msg`.
    let second = contacts.send_text(BUDI, "mau pesan 2").await.expect("sent");
    let enc = server_pick(&mut events, "second to device", |e| match e {
        ServerEvent::MessageToDevice { id, enc, .. } if *id == second => Some(*enc),
        _ => None,
    })
    .await;
    assert_eq!(enc, EncType::Msg);

    let got = messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await;
    assert_eq!(got[0].text().as_deref(), Some("mau pesan 2"));
    paired.client.stop().await;
}

const SARI: &str = "6282222222222";

/// Waits until `count` entries of `number`'s inbox satisfy `keep`.
async fn inbox_until(
    server: &fake_whatsapp::FakeServer,
    events: &mut tokio::sync::broadcast::Receiver<ServerEvent>,
    number: &str,
    count: usize,
    keep: impl Fn(&fake_whatsapp::InboxEntry) -> bool,
) -> Vec<fake_whatsapp::InboxEntry> {
    let contacts = server.contacts();
    let ready = |c: &fake_whatsapp::Contacts| {
        let inbox = c.inbox(number).expect("inbox");
        let kept: Vec<_> = inbox.into_iter().filter(|e| keep(e)).collect();
        (kept.len() >= count).then_some(kept)
    };
    if let Some(done) = ready(&contacts) {
        return done;
    }
    let mut result = None;
    FakeServer::wait_for(events, DEADLINE, "the contact's inbox", |e| {
        if matches!(e, ServerEvent::Decrypted { .. }) {
            result = ready(&contacts);
        }
        result.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    result.expect("inbox ready")
}

use fake_whatsapp::FakeServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_messages_each_way_arrive_in_order_once() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    let mut sent = Vec::new();
    for i in 0..100 {
        sent.push(
            contacts
                .send_text(BUDI, &format!("in {i}"))
                .await
                .expect("sent"),
        );
    }
    // The server hands them over in order ...
    let mut delivered = Vec::new();
    while delivered.len() < 100 {
        delivered.push(
            server_pick(&mut events, "a message to the device", |e| match e {
                ServerEvent::MessageToDevice { id, from, .. } if is_from(from, BUDI) => {
                    Some(id.clone())
                }
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(delivered, sent, "queued in order");
    // ... and the client gets each exactly once. (It decrypts a burst
    // concurrently, so its events need not keep the order; the messages'
    // ids and timestamps do.)
    let got = messages(&mut paired.client, 100, |m| m.from.starts_with(BUDI)).await;
    let mut ids: Vec<_> = got.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(ids, expected, "none lost or duplicated");
    for m in &got {
        let i = sent.iter().position(|s| *s == m.id).expect("sent");
        assert_eq!(m.text(), Some(format!("in {i}")));
    }

    let mut out = Vec::new();
    for i in 0..100 {
        let r = paired
            .client
            .client
            .send_message(jid(BUDI), wa::Message::text(format!("out {i}")))
            .await
            .expect("client sends");
        out.push(r.message_id);
    }
    let inbox = inbox_until(&server, &mut events, BUDI, 100, |e| {
        e.text.as_deref().is_some_and(|t| t.starts_with("out "))
    })
    .await;
    let ids: Vec<_> = inbox.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, out, "in order, none lost or duplicated");
    assert!(inbox.iter().skip(1).all(|e| e.enc == EncType::Msg));
    // Nothing is left waiting for an ack.
    let queue = contacts.offline_queue(&paired.jid).expect("device");
    assert!(
        queue.iter().all(|q| q.class != "message"),
        "unacked messages: {queue:?}"
    );
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_arrives_and_is_read_back() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    let r = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("menu hari ini: nasi goreng"))
        .await
        .expect("client sends");
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == r.message_id).await;

    let reply = contacts
        .send_reply(BUDI, &r.message_id, "satu ya")
        .await
        .expect("reply");
    let reaction = contacts
        .send_reaction(BUDI, &r.message_id, "👍")
        .await
        .expect("reaction");
    let location = contacts
        .send_location(BUDI, -6.2, 106.8, "Kantor")
        .await
        .expect("location");
    let image = contacts
        .send_media(BUDI, fake_whatsapp::MediaKind::Image, "ini fotonya")
        .await
        .expect("image");
    let document = contacts
        .send_media(BUDI, fake_whatsapp::MediaKind::Document, "")
        .await
        .expect("document");
    let got = messages(&mut paired.client, 5, |m| m.from.starts_with(BUDI)).await;
    let by_id = |id: &str| got.iter().find(|m| m.id == id).expect("arrived").clone();

    let m = by_id(&reply);
    let ext = m
        .message
        .extended_text_message
        .as_option()
        .expect("extended");
    assert_eq!(ext.text.as_deref(), Some("satu ya"));
    assert_eq!(
        ext.context_info
            .as_option()
            .and_then(|c| c.stanza_id.clone()),
        Some(r.message_id.clone())
    );
    let m = by_id(&reaction);
    let re = m.message.reaction_message.as_option().expect("reaction");
    assert_eq!(re.text.as_deref(), Some("👍"));
    assert_eq!(
        re.key.as_option().and_then(|k| k.id.clone()),
        Some(r.message_id.clone())
    );
    let m = by_id(&location);
    let loc = m.message.location_message.as_option().expect("location");
    assert_eq!(loc.degrees_latitude, Some(-6.2));
    assert_eq!(loc.name.as_deref(), Some("Kantor"));
    let m = by_id(&image);
    let img = m.message.image_message.as_option().expect("image");
    assert_eq!(img.caption.as_deref(), Some("ini fotonya"));
    assert_eq!(img.mimetype.as_deref(), Some("image/jpeg"));
    assert!(img.file_sha256.as_ref().is_some_and(|h| h.len() == 32));
    let m = by_id(&document);
    let doc = m.message.document_message.as_option().expect("document");
    assert_eq!(doc.file_name.as_deref(), Some("invoice.pdf"));

    // The phone got its own-device copy of what the outlet sent.
    let has_copy = |c: &fake_whatsapp::Contacts| {
        c.phone_inbox().iter().any(|e| {
            e.id == r.message_id && e.text.as_deref() == Some("menu hari ini: nasi goreng")
        })
    };
    if !has_copy(&contacts) {
        FakeServer::wait_for(&mut events, DEADLINE, "the phone's copy", |_| {
            has_copy(&contacts)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", contacts.phone_inbox()));
    }
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_store_continues_the_same_sessions() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    contacts.send_text(BUDI, "pagi").await.expect("sent");
    messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await;
    let r = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("pagi juga"))
        .await
        .expect("client sends");
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == r.message_id).await;
    paired.client.stop().await;

    let mut client = start_client(&server, paired.store.clone()).await;
    client.connected().await;
    let id = contacts
        .send_text(BUDI, "masih di sana?")
        .await
        .expect("sent");
    let enc = server_pick(&mut events, "to device", |e| match e {
        ServerEvent::MessageToDevice { id: i, enc, .. } if *i == id => Some(*enc),
        _ => None,
    })
    .await;
    assert_eq!(enc, EncType::Msg, "no new session after the restart");
    let got = messages(&mut client, 1, |m| m.from.starts_with(BUDI)).await;
    assert_eq!(got[0].text().as_deref(), Some("masih di sana?"));

    let r = client
        .client
        .send_message(jid(BUDI), wa::Message::text("ya"))
        .await
        .expect("client sends");
    let entry = inbox_until(&server, &mut events, BUDI, 1, |e| e.id == r.message_id).await;
    assert_eq!(entry[0].enc, EncType::Msg, "the client kept its session");
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_an_offline_device_and_come_once() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    paired.client.stop().await;

    let mut sent = Vec::new();
    for text in ["satu", "dua", "tiga"] {
        sent.push(contacts.send_text(BUDI, text).await.expect("sent"));
    }
    let queue = contacts.offline_queue(&paired.jid).expect("device");
    // (The phone's key share may wait there too, if the first client
    // stopped before confirming it: it comes again at the next login.)
    assert_eq!(
        queue
            .iter()
            .filter(|q| q.class == "message" && is_from(&q.from, BUDI))
            .count(),
        3,
        "{queue:?}"
    );

    let mut events = server.subscribe();
    let mut client = start_client(&server, paired.store.clone()).await;
    let queued: Vec<String> = queue
        .iter()
        .filter(|q| is_from(&q.from, BUDI))
        .map(|q| q.id.clone())
        .collect();
    assert_eq!(queued, sent, "queued in order");
    // (The client decrypts an offline batch concurrently: its events may
    // come in another order.)
    let got = messages(&mut client, 3, |m| m.from.starts_with(BUDI)).await;
    let mut ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(got.iter().all(|m| m.offline), "marked offline");
    let count = server_pick(&mut events, "offline count", |e| match e {
        ServerEvent::OfflineDelivered { count, .. } => Some(*count),
        _ => None,
    })
    .await;
    assert!(count >= 3, "the three came before <offline count={count}/>");
    for id in &sent {
        server_pick(&mut events, "ack", |e| {
            matches!(e, ServerEvent::Acked { id: i, class, .. } if i == id && class == "message")
                .then_some(())
        })
        .await;
    }
    client.stop().await;

    // Acked: the next login gets nothing again.
    let mut client = start_client(&server, paired.store.clone()).await;
    let count = server_pick(&mut events, "offline count", |e| match e {
        ServerEvent::OfflineDelivered { count, .. } => Some(*count),
        _ => None,
    })
    .await;
    client.connected().await;
    let queue = contacts.offline_queue(&paired.jid).expect("device");
    assert!(
        queue.iter().all(|q| q.class != "message"),
        "count {count}, queue {queue:?}"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_message_is_delivered_again() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    // The connection drops right after the message left, before any ack.
    contacts.drop_after_next(1);
    let id = contacts
        .send_text(BUDI, "jangan hilang")
        .await
        .expect("sent");
    server_pick(&mut events, "the drop", |e| match e {
        ServerEvent::Closed { reason, .. } if reason.contains("before its ack") => Some(()),
        _ => None,
    })
    .await;
    // The plain client reconnects by itself; the message comes again and is
    // acked this time.
    server_pick(&mut events, "redelivery acked", |e| {
        matches!(e, ServerEvent::Acked { id: i, class, .. } if *i == id && class == "message")
            .then_some(())
    })
    .await;
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    assert_eq!(got[0].text().as_deref(), Some("jangan hilang"));
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_identity_change_starts_new_sessions_both_ways() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    contacts.send_text(BUDI, "sebelum").await.expect("sent");
    messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await;

    contacts.change_identity(BUDI).await.expect("reinstall");
    let id = contacts.send_text(BUDI, "hp baru").await.expect("sent");
    let enc = server_pick(&mut events, "to device", |e| match e {
        ServerEvent::MessageToDevice { id: i, enc, .. } if *i == id => Some(*enc),
        _ => None,
    })
    .await;
    assert_eq!(enc, EncType::Pkmsg);
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    assert_eq!(got[0].text().as_deref(), Some("hp baru"));

    let r = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("oke"))
        .await
        .expect("client sends");
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == r.message_id).await;
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_contact_with_two_devices_reaches_both() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let mut events = server.subscribe();
    let r = paired
        .client
        .client
        .send_message(jid(SARI), wa::Message::text("pesanan siap"))
        .await
        .expect("client sends");
    let inbox = inbox_until(&server, &mut events, SARI, 2, |e| e.id == r.message_id).await;
    let mut devices: Vec<u16> = inbox.iter().map(|e| e.device).collect();
    devices.sort_unstable();
    assert_eq!(devices, vec![0, 1]);
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_from_two_members() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let group = "120363000000000001@g.us";
    let a = contacts
        .send_group_text(group, BUDI, "siapa yang pesan?")
        .await
        .expect("budi posts");
    let b = contacts
        .send_group_text(group, SARI, "saya")
        .await
        .expect("sari posts");
    let c = contacts
        .send_group_text(group, BUDI, "oke")
        .await
        .expect("budi posts again");
    // Two senders' chains are decrypted independently, so the client's
    // events may interleave them; each arrives once, from its member.
    let got = messages(&mut paired.client, 3, |m| m.chat == group).await;
    let by_id = |id: &str| got.iter().find(|m| m.id == id).expect("arrived").clone();
    assert_eq!(got.len(), 3);
    assert_eq!(by_id(&a).text().as_deref(), Some("siapa yang pesan?"));
    assert!(by_id(&a).from.starts_with(BUDI));
    assert_eq!(by_id(&b).text().as_deref(), Some("saya"));
    assert!(by_id(&b).from.starts_with(SARI));
    assert_eq!(by_id(&c).text().as_deref(), Some("oke"));
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_client_cannot_decrypt_is_sent_again_after_its_retry() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();
    contacts.corrupt_next(1);
    let id = contacts.send_text(BUDI, "coba lagi").await.expect("sent");
    server_pick(&mut events, "the client's retry receipt", |e| match e {
        ServerEvent::ReceiptFromDevice { entry, .. }
            if entry.kind == "retry" && entry.ids.contains(&id) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    assert_eq!(got[0].text().as_deref(), Some("coba lagi"));
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_reaches_the_app_once() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    contacts.duplicate_next(1);
    let twice = contacts.send_text(BUDI, "dua kali?").await.expect("sent");
    let marker = contacts.send_text(BUDI, "penanda").await.expect("sent");
    // The client's events need not keep the order: wait for both, then for
    // one more message sent after them, before counting.
    let mut got = Vec::new();
    let seen = |got: &[Inbound], id: &str| got.iter().any(|m| m.id == id);
    while !(seen(&got, &twice) && seen(&got, &marker)) {
        got.extend(messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await);
    }
    let last = contacts.send_text(BUDI, "terakhir").await.expect("sent");
    while !seen(&got, &last) {
        got.extend(messages(&mut paired.client, 1, |m| m.from.starts_with(BUDI)).await);
    }
    assert_eq!(got.iter().filter(|m| m.id == twice).count(), 1, "{got:?}");
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_can_be_withheld_and_delayed() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();

    contacts.withhold_receipts(true);
    let quiet = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("tanpa tanda"))
        .await
        .expect("client sends")
        .message_id;
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == quiet).await;

    contacts.withhold_receipts(false);
    let delay = std::time::Duration::from_millis(300);
    contacts.delay_receipts(Some(delay));
    let sent_at = Instant::now();
    let late = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("pelan"))
        .await
        .expect("client sends")
        .message_id;
    let mut seen_quiet = None;
    paired
        .client
        .wait_for("the delayed receipt", |e| match e {
            whatsapp_rust::types::events::Event::Receipt(r) => {
                if r.message_ids.contains(&quiet) {
                    seen_quiet = Some(format!("{:?} from {}", r.r#type, r.source.sender));
                }
                r.message_ids.contains(&late).then_some(())
            }
            _ => None,
        })
        .await;
    assert!(sent_at.elapsed() >= delay, "receipt came after the delay");
    assert_eq!(seen_quiet, None, "no receipt for the withheld message");
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_not_on_whatsapp_cannot_send_and_is_reported_out() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    contacts.set_on_whatsapp(BUDI, false).expect("contact");
    assert_eq!(
        contacts.send_text(BUDI, "halo").await,
        Err(fake_whatsapp::MessageError::NotOnWhatsApp(BUDI.into()))
    );
    let lookup = paired
        .client
        .client
        .contacts()
        .is_on_whatsapp(&[jid(BUDI), jid(SARI)])
        .await
        .expect("lookup");
    let on: Vec<_> = lookup
        .iter()
        .filter(|r| r.is_registered)
        .map(|r| r.jid.user.to_string())
        .collect();
    assert_eq!(on, vec![SARI.to_string()], "{lookup:?}");
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_drive_the_contacts() {
    use fake_whatsapp::control::handle_line;
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let mut events = server.subscribe();

    let reply = handle_line(&server, "contact-send +62-811-1111-1111 halo dari skrip").await;
    assert_eq!(reply["ok"], true, "{reply}");
    let id = reply["id"].as_str().expect("id").to_string();
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    assert_eq!(got[0].text().as_deref(), Some("halo dari skrip"));

    let reply = handle_line(&server, "contact-send-media 6281111111111 image foto menu").await;
    assert_eq!(reply["ok"], true, "{reply}");
    let id = reply["id"].as_str().expect("id").to_string();
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    let image = got[0].message.image_message.as_option().expect("image");
    assert_eq!(image.caption.as_deref(), Some("foto menu"));

    let r = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("terima kasih"))
        .await
        .expect("client sends");
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == r.message_id).await;
    let reply = handle_line(&server, "contact-inbox 6281111111111").await;
    let inbox = reply["inbox"].as_array().expect("inbox");
    let entry = inbox
        .iter()
        .find(|e| e["id"] == r.message_id.as_str())
        .expect("in the inbox");
    assert_eq!(entry["text"], "terima kasih");
    assert_eq!(entry["kind"], "text");

    let has_receipts = |reply: &serde_json::Value| {
        reply["receipts"]
            .as_array()
            // `delivery`, or `inactive` while the client is not marked
            // available: either way the client confirmed what it got.
            .is_some_and(|r| !r.is_empty())
    };
    let mut reply = handle_line(&server, "contact-receipts 6281111111111").await;
    while !has_receipts(&reply) {
        server_pick(&mut events, "a receipt from the device", |e| {
            matches!(e, ServerEvent::ReceiptFromDevice { .. }).then_some(())
        })
        .await;
        reply = handle_line(&server, "contact-receipts 6281111111111").await;
    }
    let reply = handle_line(&server, &format!("offline-queue {}", paired.jid)).await;
    assert!(reply["queue"].is_array(), "{reply}");

    let reply = handle_line(&server, "contact-burst 6281111111111 20 promo").await;
    let ids: Vec<String> = reply["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 20);
    let got = messages(&mut paired.client, 20, |m| ids.contains(&m.id)).await;
    let mut texts: Vec<String> = got.iter().filter_map(Inbound::text).collect();
    texts.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("promo {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_that_cannot_decrypt_asks_for_a_retry_and_gets_the_message() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let mut events = server.subscribe();
    let first = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("pertama"))
        .await
        .expect("client sends");
    inbox_until(&server, &mut events, BUDI, 1, |e| e.id == first.message_id).await;

    // The contact's phone lost its sessions: the outlet's next `msg` cannot
    // be read, the phone sends a retry receipt, the client sends it again.
    contacts.forget_sessions(BUDI).await.expect("contact");
    let second = paired
        .client
        .client
        .send_message(jid(BUDI), wa::Message::text("kedua"))
        .await
        .expect("client sends");
    server_pick(&mut events, "the contact's retry receipt", |e| match e {
        ServerEvent::ReceiptToDevice { id, kind, .. }
            if *id == second.message_id && kind == "retry" =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let entry = inbox_until(&server, &mut events, BUDI, 1, |e| e.id == second.message_id).await;
    assert_eq!(entry[0].text.as_deref(), Some("kedua"));
    assert_eq!(entry[0].enc, EncType::Pkmsg, "a new session");
    paired.client.stop().await;
}
