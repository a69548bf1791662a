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
