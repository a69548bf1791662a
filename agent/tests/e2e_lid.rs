//! Customers on today's WhatsApp, end to end: the real agent, the fake
//! server's contacts addressed by number, by LID with the number beside it,
//! and by LID alone, and Mosquitto, observed the way HQ would.
//!
//! Budi (6281111111111) writes by LID with his number shared (the fake's
//! default), Sari (6282222222222) by number, Dewi (6283333333333) by LID
//! with her number hidden.

mod common;
#[path = "common/hq.rs"]
mod hq;
#[path = "common/mqtt.rs"]
mod mqtt;

use common::*;
use fake_whatsapp::{Addressing, Contact, FakeServer, ServerConfig, lid_for};
use hq::*;
use mqtt::*;
use serde_json::{Value, json};

const BUDI: &str = "6281111111111";
const SARI: &str = "6282222222222";
const DEWI: &str = "6283333333333";

async fn three_customers() -> FakeServer {
    server_with(ServerConfig {
        contacts: vec![
            Contact::new(BUDI, "Budi"),
            Contact::new(SARI, "Sari").addressed(Addressing::Pn),
            Contact::new(DEWI, "Dewi").addressed(Addressing::LidHidden),
        ],
        ..ServerConfig::default()
    })
    .await
}

/// The read receipts `number` got for `id`.
fn reads_of(server: &FakeServer, number: &str, id: &str) -> usize {
    server
        .contacts()
        .receipts(number)
        .expect("a contact")
        .iter()
        .filter(|r| r.kind == "read" && r.ids.iter().any(|i| i == id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_sees_numbers_where_whatsapp_shares_them_and_replies_reach_everyone() {
    let server = three_customers().await;
    let outlet = Outlet::new("lid", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    contacts
        .send_text(BUDI, "dari budi, lewat lid")
        .await
        .expect("Budi writes");
    contacts
        .send_text(SARI, "dari sari, lewat nomor")
        .await
        .expect("Sari writes");
    contacts
        .send_text(DEWI, "dari dewi, nomor disembunyikan")
        .await
        .expect("Dewi writes");
    let budi = wait_inbound(&mut hq, &outlet, "dari budi, lewat lid").await;
    let sari = wait_inbound(&mut hq, &outlet, "dari sari, lewat nomor").await;
    let dewi = wait_inbound(&mut hq, &outlet, "dari dewi, nomor disembunyikan").await;

    assert_eq!(budi["from"], format!("+{BUDI}"), "{budi}");
    assert_eq!(budi["from_lid"], format!("{}@lid", lid_for(BUDI)), "{budi}");
    assert_eq!(budi["chat"], format!("{BUDI}@s.whatsapp.net"), "{budi}");
    assert_eq!(sari["from"], format!("+{SARI}"), "{sari}");
    assert_eq!(sari["chat"], format!("{SARI}@s.whatsapp.net"), "{sari}");
    let dewi_lid = format!("{}@lid", lid_for(DEWI));
    assert_eq!(dewi["from"], dewi_lid, "{dewi}");
    assert_eq!(dewi["chat"], dewi_lid, "{dewi}");
    assert_eq!(dewi["from_name"], "Dewi", "{dewi}");
    assert!(
        !dewi.to_string().contains(DEWI),
        "the hidden number leaks: {dewi}"
    );

    // HQ answers each in the chat it was given: all three decrypt.
    for (who, number, text) in [
        (&budi, BUDI, "balasan untuk budi"),
        (&sari, SARI, "balasan untuk sari"),
        (&dewi, DEWI, "balasan untuk dewi"),
    ] {
        let answer = hq
            .request(
                &outlet.prefix,
                "send",
                json!({"to": who["chat"], "text": text}),
            )
            .await;
        assert_eq!(answer["status"], "ok", "{answer}");
        wait_received(&server, number, text).await;
        let id = answer["data"]["id"].as_str().expect("an id").to_string();
        // The status names the chat as HQ wrote it.
        let shown = if number == DEWI {
            dewi_lid.clone()
        } else {
            format!("+{number}")
        };
        let status = wait_status(&mut hq, &outlet, &id, "delivered").await;
        assert_eq!(status["to"], shown, "{status}");
    }

    // check_number takes a LID and gives the number only where it is
    // shared.
    for (lid, phone) in [(lid_for(BUDI), Some(BUDI)), (lid_for(DEWI), None)] {
        let answer = agent
            .request(json!({"command": "check_number", "phone": format!("{lid}@lid")}))
            .await
            .expect("an answer");
        assert_eq!(answer["status"], "ok", "{answer}");
        assert_eq!(answer["data"]["registered"], true, "{answer}");
        assert_eq!(answer["data"]["lid"], format!("{lid}@lid"), "{answer}");
        assert_eq!(
            answer["data"]["phone"],
            phone.map_or(Value::Null, |p| json!(format!("+{p}"))),
            "{answer}"
        );
    }
    agent.stop().await;
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_is_one_chat_by_number_or_by_lid_and_after_a_restart() {
    let server = three_customers().await;
    let outlet = Outlet::new("lidchat", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    contacts
        .set_addressing(BUDI, Addressing::Pn)
        .expect("a contact");
    contacts
        .send_text(BUDI, "pertama, lewat nomor")
        .await
        .expect("sent");
    let first = wait_inbound(&mut hq, &outlet, "pertama, lewat nomor").await;
    contacts
        .set_addressing(BUDI, Addressing::Lid)
        .expect("a contact");
    contacts
        .send_text(BUDI, "kedua, lewat lid")
        .await
        .expect("sent");
    let second = wait_inbound(&mut hq, &outlet, "kedua, lewat lid").await;
    assert_eq!(first["chat"], second["chat"], "{first} {second}");
    assert_eq!(first["from"], second["from"], "{first} {second}");
    assert_eq!(second["from"], format!("+{BUDI}"));

    // What the agent learnt is in session.db: after a restart, Budi writing
    // with his number hidden is still Budi.
    assert!(agent.stop().await.success());
    agent.spawn();
    agent.wait_state("connected").await;
    contacts
        .set_addressing(BUDI, Addressing::LidHidden)
        .expect("a contact");
    contacts
        .send_text(BUDI, "ketiga, nomor disembunyikan")
        .await
        .expect("sent");
    let third = wait_inbound(&mut hq, &outlet, "ketiga, nomor disembunyikan").await;
    assert_eq!(third["from"], format!("+{BUDI}"), "{third}");
    assert_eq!(third["chat"], first["chat"], "{third}");
    assert_eq!(
        third["from_lid"],
        format!("{}@lid", lid_for(BUDI)),
        "{third}"
    );
    agent.stop().await;
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stay_unread_until_hq_reads_them() {
    let server = three_customers().await;
    let outlet = Outlet::new("lidread", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    let from_budi = contacts
        .send_text(BUDI, "sudah transfer")
        .await
        .expect("sent");
    let from_dewi = contacts.send_text(DEWI, "mau tanya").await.expect("sent");
    let budi = wait_inbound(&mut hq, &outlet, "sudah transfer").await;
    let dewi = wait_inbound(&mut hq, &outlet, "mau tanya").await;
    // A send after them goes out on the same connection: once it is
    // delivered, any read receipt the agent had sent by itself would be
    // at the contacts already.
    let answer = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": budi["chat"], "text": "sebentar ya"}),
        )
        .await;
    let id = answer["data"]["id"].as_str().expect("an id").to_string();
    wait_status(&mut hq, &outlet, &id, "delivered").await;
    assert_eq!(
        reads_of(&server, BUDI, &from_budi),
        0,
        "read before HQ read it"
    );
    assert_eq!(
        reads_of(&server, DEWI, &from_dewi),
        0,
        "read before HQ read it"
    );

    // Bad requests are refused with a reason.
    for bad in [
        json!({"chat": budi["chat"], "ids": []}),
        json!({"chat": "120363000000000001@g.us", "ids": ["X"]}),
        json!({"chat": "not a chat", "ids": ["X"]}),
    ] {
        let answer = hq.request(&outlet.prefix, "read", bad.clone()).await;
        assert_eq!(answer["status"], "error", "{bad} → {answer}");
    }

    for (who, number, id) in [(&budi, BUDI, &from_budi), (&dewi, DEWI, &from_dewi)] {
        let answer = hq
            .request(
                &outlet.prefix,
                "read",
                json!({"chat": who["chat"], "ids": [id]}),
            )
            .await;
        assert_eq!(answer["status"], "ok", "{answer}");
        let deadline = std::time::Instant::now() + WAIT;
        while reads_of(&server, number, id) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{number} never got a read receipt: {:?}",
                server.contacts().receipts(number)
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    agent.stop().await;
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_by_lid_is_named_by_number() {
    let server = three_customers().await;
    let outlet = Outlet::new("lidgroup", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let group = "120363000000000009@g.us";
    server
        .contacts()
        .send_group_text(group, BUDI, "siapa jaga hari ini?")
        .await
        .expect("Budi posts");
    let msg = wait_inbound(&mut hq, &outlet, "siapa jaga hari ini?").await;
    assert_eq!(msg["chat"], group, "{msg}");
    assert_eq!(msg["group"], group, "{msg}");
    assert_eq!(msg["from"], format!("+{BUDI}"), "{msg}");
    assert_eq!(msg["from_lid"], format!("{}@lid", lid_for(BUDI)), "{msg}");
    agent.stop().await;
    outlet.clean_up().await;
}
