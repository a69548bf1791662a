//! Today's WhatsApp addressing, checked with a plain whatsapp-rust client:
//! contacts known by LID (with or without their number beside it), sends by
//! LID or by number, LID-addressed groups, and the lookups that map one to
//! the other.

mod common;
#[path = "common/contacts.rs"]
mod contacts;

use common::*;
use contacts::*;
use fake_whatsapp::{Addressing, ServerEvent, lid_for};
use wacore::proto_helpers::MessageBuilderExt as _;
use waproto::whatsapp as wa;
use whatsapp_rust::Jid;

const BUDI: &str = "6281111111111";
const SARI: &str = "6282222222222";

/// The contact writes in each addressing mode; the client decrypts each and
/// sees the sender as WhatsApp shows it: the number alone (`pn`), the LID
/// with the number beside it (`lid`), the LID alone (`lid-hidden`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_addressing_mode_reaches_the_client_as_whatsapp_shows_it() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    let lid = lid_for(SARI);
    assert_eq!(contacts.lid(SARI), lid);

    for (mode, text) in [
        (Addressing::Pn, "by number"),
        (Addressing::Lid, "by lid"),
        (Addressing::LidHidden, "by hidden lid"),
    ] {
        contacts.set_addressing(SARI, mode).expect("a contact");
        let id = contacts.send_text(SARI, text).await.expect("sent");
        let got = messages(&mut paired.client, 1, |m| m.id == id).await;
        let got = &got[0];
        assert_eq!(got.text().as_deref(), Some(text), "{mode:?}");
        let sender: Jid = got.sender.parse().expect("a JID");
        match mode {
            Addressing::Pn => {
                assert!(sender.is_pn(), "{got:?}");
                assert_eq!(sender.user, SARI);
                assert_eq!(got.sender_alt, None);
            }
            Addressing::Lid => {
                assert!(sender.is_lid(), "{got:?}");
                assert_eq!(sender.user, lid);
                assert_eq!(
                    got.sender_alt.as_deref(),
                    Some(&*format!("{SARI}@s.whatsapp.net"))
                );
                assert_eq!(got.chat, format!("{lid}@lid"));
            }
            Addressing::LidHidden => {
                assert!(sender.is_lid(), "{got:?}");
                assert_eq!(sender.user, lid);
                assert_eq!(got.sender_alt, None, "no number anywhere");
                assert!(!got.chat.contains(SARI));
            }
        }
    }
    paired.client.stop().await;
}

/// The client sends to a contact by LID and by number: the contact decrypts
/// both, and its receipts come from the address the client wrote to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_by_lid_and_by_number_both_reach_the_contact() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let mut events = server.subscribe();
    let lid = Jid::lid(lid_for(BUDI));

    let mut sent = Vec::new();
    for (to, text) in [(lid.clone(), "lewat lid"), (jid(BUDI), "lewat nomor")] {
        let r = paired
            .client
            .client
            .send_message(to.clone(), wa::Message::text(text))
            .await
            .expect("client sends");
        let entry = server_pick(&mut events, "the contact decrypts", |e| match e {
            ServerEvent::Decrypted { entry, by } if entry.id == r.message_id => {
                Some((entry.clone(), by.clone()))
            }
            _ => None,
        })
        .await;
        assert_eq!(entry.0.text.as_deref(), Some(text), "to {to}");
        assert!(entry.1.starts_with(BUDI), "decrypted by {}", entry.1);
        sent.push((to, r.message_id));
    }
    // Read receipts for both come back to the client, each from where its
    // message went. (Each contact answers from its own task: in any order.)
    let mut from_where: std::collections::HashMap<String, Jid> = Default::default();
    while from_where.len() < sent.len() {
        let (id, chat) = paired
            .client
            .wait_for("read receipts", |e| match e {
                whatsapp_rust::types::events::Event::Receipt(r)
                    if format!("{:?}", r.r#type) == "Read" =>
                {
                    sent.iter()
                        .find(|(_, id)| r.message_ids.contains(id))
                        .map(|(_, id)| (id.clone(), r.source.chat.clone()))
                }
                _ => None,
            })
            .await;
        from_where.insert(id, chat);
    }
    for (to, id) in &sent {
        assert_eq!(
            from_where[id].user, to.user,
            "the receipt for {id} comes from where it went"
        );
    }
    paired.client.stop().await;
}

/// A usync asked by number gives the contact's LID; asked by LID, it names
/// the user by LID and lists the same devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_map_numbers_to_lids_and_back() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let client = &paired.client.client;
    let found = client
        .contacts()
        .is_on_whatsapp(&[jid(SARI), Jid::lid(lid_for(BUDI))])
        .await
        .expect("a lookup");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|r| r.is_registered), "{found:?}");
    let sari = found.iter().find(|r| r.jid.user == SARI).expect("Sari");
    assert_eq!(
        sari.lid.as_ref().map(|l| l.user.to_string()),
        Some(lid_for(SARI))
    );
    let budi = found.iter().find(|r| r.jid.is_lid()).expect("Budi by LID");
    assert_eq!(budi.jid.user, lid_for(BUDI));
    assert_eq!(
        budi.pn_jid.as_ref().map(|j| j.user.to_string()),
        Some(BUDI.to_string()),
        "a shared number comes beside the LID"
    );
    // A hidden number does not.
    server
        .contacts()
        .set_addressing(BUDI, Addressing::LidHidden)
        .expect("a contact");
    let hidden = client
        .contacts()
        .is_on_whatsapp(&[Jid::lid(lid_for(BUDI))])
        .await
        .expect("a lookup");
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    assert!(
        hidden[0].is_registered && hidden[0].pn_jid.is_none(),
        "{hidden:?}"
    );
    let devices = client
        .signal()
        .get_user_devices(&[Jid::lid(lid_for(SARI))])
        .await
        .expect("a device list");
    let mut ids: Vec<u16> = devices.iter().map(|d| d.device).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![0, 1],
        "Sari's phone and companion, by LID: {devices:?}"
    );
    assert!(devices.iter().all(|d| d.is_lid()), "{devices:?}");
    let entry = client
        .get_lid_pn_entry(&jid(SARI))
        .await
        .expect("the store answers");
    assert_eq!(
        entry.map(|e| e.lid.to_string()),
        Some(lid_for(SARI)),
        "the LID learnt from the lookups"
    );
    paired.client.stop().await;
}

/// A LID-addressed group: members by LID, the number in `participant_pn`
/// (or not at all, for a hidden one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_group_names_each_member_as_whatsapp_does() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let contacts = server.contacts();
    contacts
        .set_addressing(SARI, Addressing::LidHidden)
        .expect("a contact");
    let group = "120363000000000002@g.us";
    let a = contacts
        .send_group_text(group, BUDI, "dari budi")
        .await
        .expect("budi posts");
    let b = contacts
        .send_group_text(group, SARI, "dari sari")
        .await
        .expect("sari posts");
    let got = messages(&mut paired.client, 2, |m| m.chat == group).await;
    let by_id = |id: &str| got.iter().find(|m| m.id == id).expect("arrived").clone();
    let budi = by_id(&a);
    assert_eq!(budi.text().as_deref(), Some("dari budi"));
    assert_eq!(budi.sender, format!("{}@lid", lid_for(BUDI)));
    assert_eq!(
        budi.sender_alt.as_deref(),
        Some(&*format!("{BUDI}@s.whatsapp.net"))
    );
    let sari = by_id(&b);
    assert_eq!(sari.text().as_deref(), Some("dari sari"));
    assert_eq!(sari.sender, format!("{}@lid", lid_for(SARI)));
    assert_eq!(sari.sender_alt, None);
    paired.client.stop().await;
}
