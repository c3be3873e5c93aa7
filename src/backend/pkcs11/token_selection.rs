//! Which token: by label, serial number and/or slot id, as given on the
//! command line, in the config, or in an RFC 7512 URI.
//!
//! A token is never chosen by slot number alone, because slot ids are not
//! stable (SoftHSM renumbers them on every initialisation). A slot whose
//! C_GetTokenInfo fails is skipped with a warning, so one broken slot does
//! not hide the others. The exception is a slot named by `slot-id` together
//! with a label or serial: its token info cannot be checked, so it is used
//! with a warning. cryptoki 0.12 cannot parse openCryptoki's token clock,
//! and this is how that token is reached.

use cryptoki::context::Pkcs11;
use cryptoki::slot::{Slot, TokenInfo};

use super::{describe, softhsm_conf};
use crate::error::{Error, Result};

/// What identifies the token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// CKA token label (`token=` in a URI).
    pub label: Option<String>,
    /// Token serial number (`serial=`).
    pub serial: Option<String>,
    /// Slot id (`slot-id=`); only together with a label or serial.
    pub slot_id: Option<u64>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
}

impl TokenSelector {
    /// Selects by label.
    pub fn label(label: &str) -> Self {
        TokenSelector {
            label: Some(label.to_owned()),
            ..Default::default()
        }
    }

    /// A short description for messages: `"prod" (serial 1234)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label {
            parts.push(format!("{l:?}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("slot-id {id}"));
        }
        parts.join(", ")
    }

    fn matches(&self, slot: Slot, info: &TokenInfo) -> bool {
        info.token_initialized()
            && self.label.as_deref().is_none_or(|l| info.label() == l)
            && self
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number() == s)
            && self.slot_id.is_none_or(|id| slot.id() == id)
            && self
                .manufacturer
                .as_deref()
                .is_none_or(|m| info.manufacturer_id() == m)
            && self.model.as_deref().is_none_or(|m| info.model() == m)
    }
}

/// The slot found, and its token info if the module could report it.
pub(super) struct Found {
    pub(super) slot: Slot,
    pub(super) info: Option<TokenInfo>,
}

pub(super) fn find(pkcs11: &Pkcs11, module: &str, selector: &TokenSelector) -> Result<Found> {
    if selector.label.is_none() && selector.serial.is_none() {
        return Err(Error::Config(
            "no token given: name it by label (--token LABEL, [token] label) or serial; \
             a slot id alone is not stable enough to pick a token."
                .into(),
        ));
    }
    let mut scan = scan(pkcs11, module, selector)?;
    if scan.matched.len() == 1 {
        if let Some(found) = scan.matched.pop() {
            return Ok(found);
        }
    }
    match (scan.matched.len(), scan.unreadable_named_slot) {
        (0, Some(slot)) => Ok(Found { slot, info: None }),
        (0, None) => Err(Error::TokenNotFound {
            label: selector.describe(),
            module: module.to_owned(),
            hint: sentence(softhsm_conf::hint_from_env(
                std::path::Path::new(module),
                softhsm_conf::Failure::NoMatch {
                    any_present: !scan.available.is_empty(),
                },
            )),
            available: scan.available,
        }),
        (n, _) => Err(Error::Config(format!(
            "{n} tokens match {}; add serial= or slot-id= to pick one.",
            selector.describe()
        ))),
    }
}

/// `clause` as a sentence to append to a message: " Clause." or "".
fn sentence(clause: String) -> String {
    let mut chars = clause.chars();
    match chars.next() {
        Some(first) => format!(" {}{}.", first.to_uppercase(), chars.as_str()),
        None => clause,
    }
}

struct Scan {
    matched: Vec<Found>,
    available: Vec<String>,
    unreadable_named_slot: Option<Slot>,
}

fn scan(pkcs11: &Pkcs11, module: &str, selector: &TokenSelector) -> Result<Scan> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Error::ModuleLoad {
            path: module.to_owned(),
            reason: format!("C_GetSlotList: {}", describe(&e)),
        })?;
    let mut out = Scan {
        matched: Vec::new(),
        available: Vec::new(),
        unreadable_named_slot: None,
    };
    for slot in slots {
        match pkcs11.get_token_info(slot) {
            Ok(info) if selector.matches(slot, &info) => out.matched.push(Found {
                slot,
                info: Some(info),
            }),
            Ok(info) if info.token_initialized() => out.available.push(info.label().to_owned()),
            Ok(_) => {}
            Err(e) if selector.slot_id == Some(slot.id()) => {
                log::warn!(
                    "cannot read the token info of slot {} ({}); using it because slot-id={} was given",
                    slot.id(),
                    describe(&e),
                    slot.id()
                );
                out.unreadable_named_slot = Some(slot);
            }
            Err(e) => {
                log::warn!(
                    "skipping slot {}: C_GetTokenInfo failed: {}",
                    slot.id(),
                    describe(&e)
                );
                out.available.push(format!(
                    "<slot {id}: token info unreadable; name it with pkcs11:token=LABEL;slot-id={id}>",
                    id = slot.id()
                ));
            }
        }
    }
    Ok(out)
}
