//! `describe` on every kind of message WhatsApp sends.

use super::*;
use chrono::TimeZone as _;
use serde_json::json;
use wa::message::protocol_message::Type as ProtocolType;
use wa::message::secret_encrypted_message::SecretEncType;
use whatsapp_rust::wacore::types::message::MessageSource;
use whatsapp_rust::waproto::buffa::MessageField;

const CUSTOMER: &str = "4915112345678";
const LID: &str = "123456789012345";
const GROUP: &str = "120363041234567890";

fn customer() -> Jid {
    Jid::pn_device(CUSTOMER, 3)
}

/// A customer's 1:1 message as whatsapp-rust parses it: the chat is the
/// sender without their device.
fn direct_info() -> MessageInfo {
    info(Jid::pn(CUSTOMER), customer())
}

fn info(chat: Jid, sender: Jid) -> MessageInfo {
    MessageInfo {
        source: MessageSource {
            is_group: chat.is_group(),
            chat,
            sender,
            ..Default::default()
        },
        id: "3EB0A1B2C3D4E5F6".into(),
        push_name: "Ada".into(),
        timestamp: Utc.with_ymd_and_hms(2026, 10, 1, 12, 30, 5).unwrap(),
        ..Default::default()
    }
}

fn conversation(text: &str) -> wa::Message {
    wa::Message {
        conversation: Some(text.into()),
        ..Default::default()
    }
}

fn key(id: &str) -> MessageField<wa::MessageKey> {
    MessageField::some(wa::MessageKey {
        remote_jid: Some(format!("{CUSTOMER}@s.whatsapp.net")),
        from_me: Some(false),
        id: Some(id.into()),
        ..Default::default()
    })
}

fn quoting(id: &str) -> MessageField<wa::ContextInfo> {
    MessageField::some(wa::ContextInfo {
        stanza_id: Some(id.into()),
        participant: Some("4930000000@s.whatsapp.net".into()),
        ..Default::default()
    })
}

fn envelope(message: wa::Message) -> MessageField<wa::message::FutureProofMessage> {
    MessageField::some(wa::message::FutureProofMessage {
        message: MessageField::some(message),
    })
}

fn protocol(protocol: wa::message::ProtocolMessage) -> wa::Message {
    wa::Message {
        protocol_message: MessageField::some(protocol),
        ..Default::default()
    }
}

/// The payload of a message that must be published, checked for the
/// one thing every payload promises: no `null` anywhere.
fn payload(message: &wa::Message, info: &MessageInfo) -> Value {
    let record = describe(message, info).expect("a customer's message is published");
    assert_no_null(&record.payload);
    record.payload
}

fn assert_no_null(value: &Value) {
    match value {
        Value::Null => panic!("the payload carries a null"),
        Value::Array(items) => items.iter().for_each(assert_no_null),
        Value::Object(fields) => fields.values().for_each(assert_no_null),
        _ => {}
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn text() {
    let info = direct_info();
    let record = describe(&conversation("Two pizzas, please"), &info).unwrap();
    assert_eq!(record.chat, format!("{CUSTOMER}@s.whatsapp.net"));
    assert_eq!(record.sender, format!("{CUSTOMER}:3@s.whatsapp.net"));
    assert_eq!(record.id, "3EB0A1B2C3D4E5F6");
    assert_eq!(record.at, info.timestamp);
    assert_eq!(
        record.payload,
        json!({
            "id": "3EB0A1B2C3D4E5F6",
            "chat": format!("{CUSTOMER}@s.whatsapp.net"),
            "from": format!("+{CUSTOMER}"),
            "from_name": "Ada",
            "at": "2026-10-01T12:30:05Z",
            "kind": "text",
            "text": "Two pizzas, please",
        })
    );
}

#[test]
fn reply() {
    let message = wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("Yes, that one".into()),
            context_info: quoting("3EB0OUTLET"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "text");
    assert_eq!(payload["text"], "Yes, that one");
    assert_eq!(payload["quoted_id"], "3EB0OUTLET");
}

#[test]
fn image_with_caption_in_an_ephemeral_view_once_envelope() {
    let image = wa::Message {
        image_message: MessageField::some(wa::message::ImageMessage {
            mimetype: Some("image/jpeg".into()),
            caption: Some("This is what arrived".into()),
            file_sha256: Some(vec![0x00, 0xab, 0x0f, 0xff]),
            file_length: Some(48_213),
            context_info: quoting("3EB0ORDER"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let message = wa::Message {
        ephemeral_message: envelope(wa::Message {
            view_once_message_v2: envelope(image),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "image");
    assert_eq!(
        payload["media"],
        json!({ "mimetype": "image/jpeg", "size": 48_213, "sha256": "00ab0fff" })
    );
    assert_eq!(payload["caption"], "This is what arrived");
    assert_eq!(payload["quoted_id"], "3EB0ORDER");
}

#[test]
fn document_with_file_name_and_caption() {
    let message = wa::Message {
        document_with_caption_message: envelope(wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                mimetype: Some("application/pdf".into()),
                file_name: Some("order-17.pdf".into()),
                caption: Some("Our order".into()),
                file_sha256: Some(vec![0xde, 0xad]),
                file_length: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "document");
    assert_eq!(
        payload["media"],
        json!({
            "mimetype": "application/pdf",
            "size": 1024,
            "sha256": "dead",
            "file_name": "order-17.pdf",
        })
    );
    assert_eq!(payload["caption"], "Our order");
    assert!(payload.get("quoted_id").is_none());
}

#[test]
fn other_media_kinds() {
    let cases = [
        (
            wa::Message {
                video_message: MessageField::some(Default::default()),
                ..Default::default()
            },
            "video",
        ),
        (
            wa::Message {
                ptv_message: MessageField::some(Default::default()),
                ..Default::default()
            },
            "video",
        ),
        (
            wa::Message {
                audio_message: MessageField::some(Default::default()),
                ..Default::default()
            },
            "audio",
        ),
        (
            wa::Message {
                sticker_message: MessageField::some(Default::default()),
                ..Default::default()
            },
            "sticker",
        ),
    ];
    for (message, kind) in cases {
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], kind);
        // What WhatsApp left out is empty, not missing: one shape.
        assert_eq!(
            payload["media"],
            json!({ "mimetype": "", "size": 0, "sha256": "" })
        );
    }
}

#[test]
fn location() {
    let message = wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(52.520_008),
            degrees_longitude: Some(13.404_954),
            name: Some("Alexanderplatz".into()),
            address: Some("10178 Berlin".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "location");
    assert_eq!(
        payload["location"],
        json!({
            "latitude": 52.520_008,
            "longitude": 13.404_954,
            "name": "Alexanderplatz",
            "address": "10178 Berlin",
        })
    );
}

#[test]
fn live_location_is_a_location() {
    let message = wa::Message {
        live_location_message: MessageField::some(wa::message::LiveLocationMessage {
            degrees_latitude: Some(-33.868_8),
            degrees_longitude: Some(151.209_3),
            caption: Some("On my way".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "location");
    assert_eq!(
        payload["location"],
        json!({ "latitude": -33.868_8, "longitude": 151.209_3 })
    );
    assert_eq!(payload["caption"], "On my way");
}

#[test]
fn location_without_a_position_is_unknown() {
    let message = wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(f64::NAN),
            degrees_longitude: Some(13.4),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "unknown");
    assert!(payload.get("location").is_none());
}

const VCARD_BOB: &str = "BEGIN:VCARD\nVERSION:3.0\nFN:Bob\nTEL:+4915100000001\nEND:VCARD\n";
const VCARD_EVE: &str = "BEGIN:VCARD\nVERSION:3.0\nFN:Eve\nTEL:+4915100000002\nEND:VCARD";

#[test]
fn contact() {
    let message = wa::Message {
        contact_message: MessageField::some(wa::message::ContactMessage {
            display_name: Some("Bob".into()),
            vcard: Some(VCARD_BOB.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "contact");
    assert_eq!(
        payload["contact"],
        json!({ "display_name": "Bob", "vcard": VCARD_BOB })
    );
}

#[test]
fn contacts_array_is_one_contact_with_every_card() {
    let card = |name: &str, vcard: &str| wa::message::ContactMessage {
        display_name: Some(name.into()),
        vcard: Some(vcard.into()),
        ..Default::default()
    };
    let message = wa::Message {
        contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
            display_name: Some("2 contacts".into()),
            contacts: vec![card("Bob", VCARD_BOB), card("Eve", VCARD_EVE)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "contact");
    assert_eq!(payload["contact"]["display_name"], "2 contacts");
    assert_eq!(
        payload["contact"]["vcard"],
        format!("{}\n{VCARD_EVE}", VCARD_BOB.trim_end())
    );
}

fn reacting(emoji: &str) -> wa::Message {
    wa::Message {
        reaction_message: MessageField::some(wa::message::ReactionMessage {
            key: key("3EB0OUTLET"),
            text: Some(emoji.into()),
            sender_timestamp_ms: Some(1_790_000_000_000),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn reaction() {
    let payload = payload(&reacting("👍"), &direct_info());
    assert_eq!(payload["kind"], "reaction");
    assert_eq!(
        payload["reaction"],
        json!({ "emoji": "👍", "to": "3EB0OUTLET" })
    );
}

#[test]
fn reaction_removed() {
    let payload = payload(&reacting(""), &direct_info());
    assert_eq!(payload["kind"], "reaction");
    assert_eq!(
        payload["reaction"],
        json!({ "emoji": "", "to": "3EB0OUTLET" })
    );
}

#[test]
fn edit() {
    // The shape WhatsApp sends: the protocol message inside an
    // `editedMessage` envelope.
    let message = wa::Message {
        edited_message: envelope(protocol(wa::message::ProtocolMessage {
            key: key("3EB0FIRST"),
            r#type: Some(ProtocolType::MESSAGE_EDIT),
            edited_message: MessageField::some(conversation("Three pizzas, please")),
            timestamp_ms: Some(1_790_000_000_000),
            ..Default::default()
        })),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "edit");
    assert_eq!(payload["edit_of"], "3EB0FIRST");
    assert_eq!(payload["text"], "Three pizzas, please");
}

#[test]
fn edit_of_a_caption_decrypted_without_a_type() {
    // An encrypted edit as whatsapp-rust surfaces it once decrypted: the
    // new content is there, the type need not be.
    let new_caption = wa::Message {
        image_message: MessageField::some(wa::message::ImageMessage {
            caption: Some("The left one".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let message = protocol(wa::message::ProtocolMessage {
        key: key("3EB0PHOTO"),
        edited_message: MessageField::some(new_caption),
        ..Default::default()
    });
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "edit");
    assert_eq!(payload["edit_of"], "3EB0PHOTO");
    assert_eq!(payload["text"], "The left one");
}

#[test]
fn encrypted_edit_that_could_not_be_opened() {
    let message = wa::Message {
        secret_encrypted_message: MessageField::some(wa::message::SecretEncryptedMessage {
            target_message_key: key("3EB0FIRST"),
            enc_payload: Some(vec![1; 32]),
            enc_iv: Some(vec![2; 12]),
            secret_enc_type: Some(SecretEncType::MESSAGE_EDIT),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "edit");
    assert_eq!(payload["edit_of"], "3EB0FIRST");
    assert!(payload.get("text").is_none());
}

#[test]
fn revoke() {
    let message = protocol(wa::message::ProtocolMessage {
        key: key("3EB0FIRST"),
        r#type: Some(ProtocolType::REVOKE),
        ..Default::default()
    });
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "revoke");
    assert_eq!(payload["revoked"], "3EB0FIRST");
}

#[test]
fn group_message_names_the_group_and_a_lid_sender() {
    let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
    let record = describe(&conversation("Table for six tonight?"), &info).unwrap();
    assert_eq!(record.chat, format!("{GROUP}@g.us"));
    assert_eq!(record.sender, format!("{LID}:2@lid"));
    assert_eq!(record.payload["chat"], format!("{GROUP}@g.us"));
    assert_eq!(record.payload["group"], format!("{GROUP}@g.us"));
    assert_eq!(record.payload["from"], format!("{LID}@lid"));
    assert_eq!(record.payload["kind"], "text");
}

#[test]
fn broadcast_list_message_is_answered_in_the_senders_chat() {
    let info = info(
        Jid::new("1790000000", whatsapp_rust::Server::Broadcast),
        customer(),
    );
    let record = describe(&conversation("We are open on Sunday"), &info).unwrap();
    assert_eq!(record.chat, "1790000000@broadcast");
    assert_eq!(record.payload["chat"], format!("{CUSTOMER}@s.whatsapp.net"));
    assert!(record.payload.get("group").is_none());
}

#[test]
fn own_message_is_not_published() {
    let mut info = direct_info();
    info.source.is_from_me = true;
    assert_eq!(describe(&conversation("On its way"), &info), None);
}

#[test]
fn status_updates_and_channel_posts_are_not_published() {
    let status = info(Jid::status_broadcast(), customer());
    assert_eq!(describe(&conversation("My holiday"), &status), None);
    let channel = info(
        Jid::newsletter("120363000000000000"),
        Jid::newsletter("120363000000000000"),
    );
    assert_eq!(describe(&conversation("Weekly news"), &channel), None);
}

fn sender_key_distribution() -> MessageField<wa::message::SenderKeyDistributionMessage> {
    MessageField::some(wa::message::SenderKeyDistributionMessage {
        group_id: Some(format!("{GROUP}@g.us")),
        axolotl_sender_key_distribution_message: Some(vec![3; 64]),
    })
}

#[test]
fn sender_key_distribution_alone_is_not_published() {
    let message = wa::Message {
        sender_key_distribution_message: sender_key_distribution(),
        message_context_info: MessageField::some(Default::default()),
        ..Default::default()
    };
    let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
    assert_eq!(describe(&message, &info), None);
}

#[test]
fn sender_key_distribution_with_text_is_the_text() {
    let message = wa::Message {
        sender_key_distribution_message: sender_key_distribution(),
        conversation: Some("Hello".into()),
        ..Default::default()
    };
    let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
    assert_eq!(payload(&message, &info)["text"], "Hello");
}

#[test]
fn app_state_key_share_is_not_published() {
    let message = protocol(wa::message::ProtocolMessage {
        r#type: Some(ProtocolType::APP_STATE_SYNC_KEY_SHARE),
        app_state_sync_key_share: MessageField::some(Default::default()),
        ..Default::default()
    });
    assert_eq!(describe(&message, &direct_info()), None);
}

#[test]
fn other_protocol_messages_are_not_published() {
    // whatsapp-rust takes the history sync payload out before dispatch,
    // so only the type is left to say what the message was.
    for kind in [
        ProtocolType::HISTORY_SYNC_NOTIFICATION,
        ProtocolType::EPHEMERAL_SETTING,
        ProtocolType::PEER_DATA_OPERATION_REQUEST_RESPONSE_MESSAGE,
        ProtocolType::LID_MIGRATION_MAPPING_SYNC,
    ] {
        let message = protocol(wa::message::ProtocolMessage {
            key: key("3EB0FIRST"),
            r#type: Some(kind),
            ephemeral_expiration: Some(86_400),
            ..Default::default()
        });
        assert_eq!(describe(&message, &direct_info()), None, "{kind:?}");
    }
}

#[test]
fn empty_messages_are_not_published() {
    assert_eq!(describe(&wa::Message::default(), &direct_info()), None);
    assert_eq!(describe(&conversation(""), &direct_info()), None);
    let context_only = wa::Message {
        message_context_info: MessageField::some(Default::default()),
        ..Default::default()
    };
    assert_eq!(describe(&context_only, &direct_info()), None);
}

#[test]
fn album_header_is_not_published_but_its_pictures_are() {
    let header = wa::Message {
        album_message: MessageField::some(wa::message::AlbumMessage {
            expected_image_count: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(describe(&header, &direct_info()), None);

    let child = wa::Message {
        associated_child_message: envelope(wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                mimetype: Some("image/jpeg".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(payload(&child, &direct_info())["kind"], "image");
}

#[test]
fn unknown_user_type_is_published_as_unknown() {
    let message = wa::Message {
        poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
            name: Some("Pizza or pasta?".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let payload = payload(&message, &direct_info());
    assert_eq!(payload["kind"], "unknown");
    assert_eq!(
        keys(&payload),
        ["at", "chat", "from", "from_name", "id", "kind"]
    );
}

#[test]
fn absent_optional_fields_are_omitted_not_null() {
    let mut info = info(Jid::lid(LID), Jid::lid_device(LID, 0));
    info.push_name = String::new();
    let message = wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("Hi".into()),
            // A context without a quote, as forwards carry.
            context_info: MessageField::some(wa::ContextInfo {
                is_forwarded: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let text = payload(&message, &info);
    assert_eq!(
        keys(&text),
        ["at", "chat", "from", "from_lid", "id", "kind", "text"]
    );
    assert_eq!(text["from"], format!("{LID}@lid"));

    let image = wa::Message {
        image_message: MessageField::some(wa::message::ImageMessage {
            caption: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let image = payload(&image, &info);
    assert_eq!(
        keys(&image),
        ["at", "chat", "from", "from_lid", "id", "kind", "media"]
    );
    assert_eq!(keys(&image["media"]), ["mimetype", "sha256", "size"]);
}

#[test]
fn a_lid_sender_with_the_number_beside_it_is_known_by_the_number() {
    let mut info = info(Jid::lid(LID), Jid::lid_device(LID, 0));
    info.source.sender_alt = Some(Jid::pn(CUSTOMER));
    let text = payload(&conversation("Sudah transfer"), &info);
    assert_eq!(text["from"], format!("+{CUSTOMER}"));
    assert_eq!(text["from_lid"], format!("{LID}@lid"));
    assert_eq!(text["chat"], format!("{CUSTOMER}@s.whatsapp.net"));
}

#[test]
fn a_number_the_store_knows_names_a_lid_sender() {
    let info = info(Jid::lid(LID), Jid::lid_device(LID, 0));
    let who = KnownSender {
        number: Some(CUSTOMER.into()),
        lid: Some(LID.into()),
    };
    let record = describe_as(&conversation("Halo"), &info, &who).unwrap();
    assert_eq!(record.payload["from"], format!("+{CUSTOMER}"));
    assert_eq!(record.payload["chat"], format!("{CUSTOMER}@s.whatsapp.net"));
    // The redelivery keys stay what WhatsApp sent.
    assert_eq!(record.chat, format!("{LID}@lid"));
    assert_eq!(record.sender, format!("{LID}@lid"));
}

#[test]
fn a_hidden_number_leaves_the_lid() {
    let info = info(Jid::lid(LID), Jid::lid_device(LID, 0));
    let text = payload(&conversation("Halo"), &info);
    assert_eq!(text["from"], format!("{LID}@lid"));
    assert_eq!(text["chat"], format!("{LID}@lid"));
    assert_eq!(text["from_lid"], format!("{LID}@lid"));
    assert_eq!(text["from_name"], "Ada");
}

#[test]
fn a_group_member_by_lid_is_named_by_the_number_beside_it() {
    let mut info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
    info.source.sender_alt = Some(Jid::pn_device(CUSTOMER, 2));
    let text = payload(&conversation("Meja untuk enam?"), &info);
    assert_eq!(text["chat"], format!("{GROUP}@g.us"));
    assert_eq!(text["from"], format!("+{CUSTOMER}"));
    assert_eq!(text["from_lid"], format!("{LID}@lid"));
}
