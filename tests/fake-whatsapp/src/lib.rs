//! A fake WhatsApp Web server and a simulated phone, on loopback, for testing
//! the outlet agent without a phone or the internet.
//!
//! # Layout
//!
//! - [`server`]: [`FakeServer`], the accept loop and the handle that tests
//!   and the control interface use: fault injection, counters, events.
//! - `connection`: one task per client connection — the WebSocket, the Noise
//!   handshake, registration (QR refs) or login, then the node loop.
//! - `noise`: the server side of the `XX`, `IK` and `XXfallback` handshakes
//!   and the encrypted frame codec.
//! - `responder`: answers to the IQs a client needs to reach `Connected`
//!   and stay there (passive/active, offline queue, app-state sync, pre-keys,
//!   usync contact and device lookups, keepalive).
//! - [`phone`]: the simulated phone — scans QR strings (or PNG images of
//!   them) or takes a typed link code, signs the companion's identity,
//!   unlinks devices.
//! - [`link_code`]: the server's and the phone's half of linking by code
//!   (`companion_hello`, `primary_hello`, `companion_finish`).
//! - [`contacts`]: the simulated contacts — send text, replies,
//!   reactions, locations, media and group messages; read what each
//!   decrypted and the receipts it got.
//! - `messaging`, `keys`, [`signal`]: routing with per-device offline
//!   queues, the key directory, and the parties' real Signal state.
//! - [`media`]: the media servers on loopback HTTPS (`media_conn`,
//!   uploads and downloads of encrypted files, download faults) and an HTTP
//!   client that trusts them.
//! - [`observe`]: attempts, per-device concurrency, the event stream.
//! - [`control`]: the line-based control interface of the `fake-whatsapp`
//!   binary.
//! - [`config`]: the account, pairing refs and registered numbers.
//!
//! The client under test must be built with whatsapp-rust's
//! `danger-skip-cert-chain-verify`: this server's certificate chain has the
//! right structure but cannot carry WhatsApp's signatures.

pub mod config;
mod connection;
pub mod contacts;
pub mod control;
mod keys;
pub mod link_code;
pub mod media;
pub mod messaging;
mod noise;
pub mod observe;
pub mod phone;
mod responder;
pub mod server;
pub mod signal;
mod state;

pub use config::{Account, Addressing, Contact, ServerConfig, lid_for};
pub use contacts::{Contacts, MediaKind};
pub use messaging::{InboxEntry, MessageError, QueuedSummary, ReceiptEntry};
pub use noise::HandshakeKind;
pub use observe::{Admission, Attempt, ConnectionId, DeviceKey, Purpose, ServerEvent, Stats};
pub use phone::{LinkCodeError, PairedDevice, Phone, ScanError, UnlinkError};
pub use server::{FakeServer, PresenceReport, ServerError};
pub use signal::EncType;
pub use state::{LoginFailure, StreamErrorKind};
