//! `<notification type="devices">`: when a companion is linked or unlinked,
//! the account's other companions are told, as WhatsApp tells them, and a
//! plain whatsapp-rust client takes (acks) the notification.

mod common;
#[path = "common/contacts.rs"]
mod contacts;

use common::*;
use contacts::*;
use fake_whatsapp::ServerEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_companions_hear_of_a_link_and_an_unlink() {
    let server = server().await;
    let mut first = paired_client(&server).await;
    let mut events = server.subscribe();
    let mut second = paired_client(&server).await;
    let told = |operation: &'static str, to: String| {
        move |e: &ServerEvent| match e {
            ServerEvent::DevicesNotified {
                to: t,
                id,
                operation: o,
                device,
            } if *t == to && o == operation => Some((id.clone(), device.clone())),
            _ => None,
        }
    };
    let (id, device) = server_pick(
        &mut events,
        "the first companion is told of the second",
        told("add", first.jid.clone()),
    )
    .await;
    assert_eq!(device, second.jid);
    server_pick(&mut events, "the first companion takes it", |e| {
        matches!(e, ServerEvent::Acked { class, id: i, .. } if class == "notification" && *i == id)
            .then_some(())
    })
    .await;

    server.phone().unlink(&second.jid).expect("unlinked");
    let (id, device) = server_pick(
        &mut events,
        "the first companion is told the second went",
        told("remove", first.jid.clone()),
    )
    .await;
    assert_eq!(device, second.jid);
    server_pick(&mut events, "the first companion takes that too", |e| {
        matches!(e, ServerEvent::Acked { class, id: i, .. } if class == "notification" && *i == id)
            .then_some(())
    })
    .await;
    second.client.stop().await;
    first.client.stop().await;
}
