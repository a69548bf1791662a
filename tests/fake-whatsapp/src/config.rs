//! What a fake server is told before it starts: which account the simulated
//! phone owns, how pairing refs are issued and which numbers are on WhatsApp.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The WhatsApp account that the simulated phone is logged in to. Devices
/// linked by scanning a QR become companions of this account.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// Phone number, digits only, with country code (e.g. `6281234567890`).
    pub phone: String,
    /// The account's LID user part (digits).
    pub lid: String,
    /// Business name sent in `pair-success` (`<biz name>`); the client uses it
    /// as its push name. `None` sends no `<biz>` element.
    pub business_name: Option<String>,
    /// Platform of the phone (`<platform name>`), e.g. `android`.
    pub platform: String,
}

/// The default account's LID (a fixed, recognisable one: the account's LID
/// is WhatsApp's to give, not derived from its number).
pub const ACCOUNT_LID: &str = "100000000000001";

impl Default for Account {
    fn default() -> Self {
        Self {
            phone: "6281234567890".into(),
            lid: ACCOUNT_LID.into(),
            business_name: Some("Outlet Jakarta".into()),
            platform: "android".into(),
        }
    }
}

/// Configuration of one fake server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one. Only loopback addresses are
    /// accepted by [`crate::FakeServer::start`].
    pub bind: SocketAddr,
    pub account: Account,
    /// How many refs one `pair-device` carries (WhatsApp sends 6).
    pub refs_per_pairing: usize,
    /// How long the server honours the first ref (the client shows it 60 s).
    pub first_ref_lifetime: Duration,
    /// How long the server honours each later ref (the client shows each 20 s).
    pub ref_lifetime: Duration,
    /// Numbers (digits only) that a contact lookup reports as on WhatsApp.
    pub registered_numbers: BTreeSet<String>,
    /// How long the phone accepts a link code after the device asked for it
    /// (WhatsApp: 180 s).
    pub link_code_lifetime: Duration,
    /// People on WhatsApp who can exchange end-to-end encrypted messages with
    /// the account (each is also "registered" for contact lookups).
    pub contacts: Vec<Contact>,
}

/// How WhatsApp addresses a contact's messages to the account
/// (control command `contact-addressing`).
///
/// Since 2025 WhatsApp addresses most one-to-one chats by LID: a stanza
/// comes `from="<lid>@lid"` and carries the phone number in `sender_pn`
/// only when the contact shares it with the account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Addressing {
    /// From the phone-number JID, as before LIDs.
    Pn,
    /// From the LID, with the number in `sender_pn` (`participant_pn` in
    /// groups): the default, as on WhatsApp now.
    #[default]
    Lid,
    /// From the LID and no number anywhere: a stranger met in a group, a
    /// contact reached by username.
    LidHidden,
}

impl std::str::FromStr for Addressing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pn" => Ok(Self::Pn),
            "lid" => Ok(Self::Lid),
            "lid-hidden" => Ok(Self::LidHidden),
            other => Err(format!(
                "unknown addressing {other:?} (pn, lid, lid-hidden)"
            )),
        }
    }
}

/// The LID WhatsApp gives the user with phone number `number` on this
/// server: 15 digits, derived from the number (FNV-1a) so that a test can
/// predict it, and never starting with 0.
pub fn lid_for(number: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in number.bytes().filter(u8::is_ascii_digit) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const SPAN: u64 = 900_000_000_000_000;
    (100_000_000_000_000 + hash % SPAN).to_string()
}

/// A simulated WhatsApp user: a number, the name its phone announces
/// (`notify`), and how many devices it has.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Contact {
    /// Digits only, with country code.
    pub number: String,
    /// The push name sent with its messages.
    pub name: String,
    /// Linked companions besides its phone (device 0). Messages to the
    /// contact are fanned out by the client to every one of them.
    #[serde(default)]
    pub companions: u16,
    /// How its messages are addressed (LID with the number beside it,
    /// unless set otherwise).
    #[serde(default)]
    pub addressing: Addressing,
}

impl Contact {
    pub fn new(number: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            number: number.into(),
            name: name.into(),
            companions: 0,
            addressing: Addressing::default(),
        }
    }

    /// The same contact, addressed as `addressing`.
    pub fn addressed(mut self, addressing: Addressing) -> Self {
        self.addressing = addressing;
        self
    }

    /// The same contact with `n` companion devices (ids 1..=n).
    pub fn with_companions(mut self, n: u16) -> Self {
        self.companions = n;
        self
    }
}

/// The contacts a default server knows: two customers, one of whom also
/// uses WhatsApp Web (a companion device).
pub fn default_contacts() -> Vec<Contact> {
    vec![
        Contact::new("6281111111111", "Budi"),
        Contact::new("6282222222222", "Sari").with_companions(1),
    ]
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            account: Account::default(),
            refs_per_pairing: 6,
            first_ref_lifetime: Duration::from_secs(60),
            ref_lifetime: Duration::from_secs(20),
            registered_numbers: BTreeSet::from(["6281234567890".to_string()]),
            link_code_lifetime: Duration::from_secs(180),
            contacts: default_contacts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lids_are_fifteen_digits_stable_and_distinct() {
        let a = lid_for("6281111111111");
        assert_eq!(a.len(), 15);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, lid_for("+62 811-1111-1111"));
        assert_ne!(a, lid_for("6282222222222"));
    }

    #[test]
    fn addressing_parses_its_three_words() {
        assert_eq!("pn".parse(), Ok(Addressing::Pn));
        assert_eq!("lid".parse(), Ok(Addressing::Lid));
        assert_eq!("lid-hidden".parse(), Ok(Addressing::LidHidden));
        assert!("phone".parse::<Addressing>().is_err());
    }
}
