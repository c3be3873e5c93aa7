//! C_GenerateKeyPair with every security attribute stated, never left to the
//! token's defaults (openCryptoki and NSS default CKA_EXTRACTABLE to TRUE).
//!
//! Private key: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN = TRUE,
//! CKA_EXTRACTABLE = FALSE. Public key: CKA_TOKEN, CKA_VERIFY = TRUE, and
//! CKA_MODULUS_BITS + CKA_PUBLIC_EXPONENT = 65537 (RSA) or CKA_EC_PARAMS
//! (EC, Ed25519). Both: the same CKA_ID and CKA_LABEL, first a "not yet
//! delivered" [`mark`](super::mark), at delivery 16 bytes from the token's
//! RNG (after a fixed prefix for pool keys, see [`super::pool`]).
//!
//! Both carry their owner as CKA_SUBJECT ([`crate::owner`]) and the day
//! as CKA_START_DATE ([`crate::retention`]), except pool keys, which get
//! both when they are taken.
//!
//! Other usages (CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE) are left to the token:
//! setting them FALSE makes tpm2-pkcs11's C_GenerateKeyPair fail with
//! CKR_GENERAL_ERROR ("User specified and TPM specified attr mismatch").

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use der::Encode;

use super::id::ID_LEN;
use super::{Pkcs11Backend, describe, sign, uri};
use crate::algorithm::{ID_ED25519, KeyType};
use crate::backend::{GeneratedKey, KeyHandles, KeySpec};
use crate::error::{Error, Result};
use crate::spki;

/// F4, the exponent everyone uses (and the only one some HSMs accept).
const PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// [`ID_LEN`] bytes from the host's RNG: a CKA_ID's random part.
///
/// # Errors
/// `Internal.KeyError` when the RNG fails.
fn random_part() -> Result<[u8; ID_LEN]> {
    use ring::rand::SecureRandom;
    let mut r = [0u8; ID_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut r)
        .map_err(|_| Error::KeyGen("the host's RNG failed to give a CKA_ID".into()))?;
    Ok(r)
}

/// Makes the key pair `spec` asks for and returns it with its objects and
/// the CKA_ID they carry; the caller decides who keeps track of them.
///
/// The returned key names its final CKA_ID, `id_prefix` followed by
/// [`ID_LEN`] random bytes `R`, and `spec.label`; on the token the pair
/// carries this process's [`mark`](super::mark) over `R` and
/// `spec.undelivered_label` until [`KeyBackend::settle`](crate::backend::KeyBackend::settle)
/// (or the pool's admission) gives it both. A token that refused to change
/// a CKA_ID gets the final ones at once.
pub(super) fn generate(
    backend: &mut Pkcs11Backend,
    spec: &KeySpec,
    id_prefix: &[u8],
) -> Result<(GeneratedKey, Pair, Vec<u8>)> {
    // Everything the token must offer is checked before a key exists, so a
    // token that cannot finish the job never costs a key generation and a
    // rollback; from the mechanism list this connection read once. The
    // size range is asked for only when the token refuses the key.
    let (keygen, size_bits, name) = keygen_mechanism(spec.key_type);
    backend.require(keygen.mechanism_type(), name)?;
    let plan = sign::plan(backend, spec.signature)?;
    log::debug!(
        "{} will sign with {}",
        spec.signature,
        plan.mechanism_name()
    );

    let token = backend.token_label().to_owned();
    let serial = backend.token_serial().to_owned();
    let owner = backend.coordinator.owner();
    let marked = !backend.learned.marks_refused();
    let r = random_part()?;
    let id = [id_prefix, &r].concat();
    let (on_token, label) = if marked {
        (
            super::id::mark(&owner, &r),
            spec.undelivered_label.as_bytes().to_vec(),
        )
    } else {
        (id.clone(), spec.label.as_bytes().to_vec())
    };

    let (public, private) = templates(spec, &id, &on_token, label)?;
    // Room first: a full token refuses before anything is made.
    backend.take_room(2, !id_prefix.is_empty())?;
    let session = backend.session()?;
    let (pub_h, priv_h) = match session.generate_key_pair(&keygen, &public, &private) {
        Ok(pair) => pair,
        Err(e) => {
            backend.give_room(2);
            // A token that went away mid-call may have stored the pair.
            if on_token != id {
                backend.orphans.push(on_token);
            }
            backend.orphans.push(id);
            // A size the token does not make is named with its range.
            let range = check_key_size(backend, keygen.mechanism_type(), spec.key_type, size_bits);
            if let Err(unsupported @ Error::Unsupported { .. }) = range {
                return Err(unsupported);
            }
            return Err(Error::KeyGen(describe(&e)));
        }
    };
    let handles = KeyHandles {
        private: priv_h.handle(),
        public: pub_h.handle(),
    };
    let pair = Pair {
        private: priv_h,
        public: pub_h,
    };

    match check_made(session, &pair, spec.key_type, &id) {
        Ok(spki_der) => Ok((
            GeneratedKey {
                handles,
                key_type: spec.key_type,
                spki_der,
                uri: uri::private_key_uri(&token, &serial, &spec.label, &id),
                id,
                label: spec.label.clone(),
            },
            pair,
            on_token,
        )),
        Err(e) => Err(match destroy_pair(session, pair) {
            Ok(()) => {
                backend.give_room(2);
                e
            }
            Err(rollback) => {
                backend.orphans.push(on_token.clone());
                Error::RollbackFailed {
                    original: Box::new(e),
                    rollback,
                    key_uri: uri::private_key_uri(&token, &serial, &spec.label, &id),
                }
            }
        }),
    }
}

/// The key-pair mechanism for `key_type`, the key size it is asked for
/// (to name the token's range when it refuses), and its name.
fn keygen_mechanism(key_type: KeyType) -> (Mechanism<'static>, u32, &'static str) {
    match key_type {
        KeyType::Rsa { bits } => (
            Mechanism::RsaPkcsKeyPairGen,
            bits,
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
        ),
        KeyType::EcP256 => (Mechanism::EccKeyPairGen, 256, "CKM_EC_KEY_PAIR_GEN"),
        KeyType::EcP384 => (Mechanism::EccKeyPairGen, 384, "CKM_EC_KEY_PAIR_GEN"),
        KeyType::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            255,
            "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        ),
    }
}

/// The public and private templates of a pair, built before the token is
/// touched: the public key under its final `id` and `spec.label`, the
/// private one under `on_token` (its mark, or `id`) and `label`; both
/// owned from the start when `spec` names an owner.
fn templates(
    spec: &KeySpec,
    id: &[u8],
    on_token: &[u8],
    label: Vec<u8>,
) -> Result<(Vec<Attribute>, Vec<Attribute>)> {
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(spec.label.as_bytes().to_vec()),
    ];
    match spec.key_type {
        KeyType::Rsa { bits } => {
            public.push(Attribute::ModulusBits(Ulong::from(u64::from(bits))));
            public.push(Attribute::PublicExponent(PUBLIC_EXPONENT.to_vec()));
        }
        KeyType::EcP256 | KeyType::EcP384 | KeyType::Ed25519 => {
            let curve = spec.key_type.curve().unwrap_or(ID_ED25519);
            public.push(Attribute::EcParams(curve.to_der()?));
        }
    }
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(on_token.to_vec()),
        Attribute::Label(label),
    ];
    // The owner is part of the key from its first moment: a crash can
    // leave an undelivered key, never an ownerless one.
    if let Some(owner) = &spec.owner {
        let subject = owner.to_subject_der();
        let today = super::dates::date_of(crate::day::Day::today());
        public.push(Attribute::Subject(subject.clone()));
        private.push(Attribute::Subject(subject));
        // The day it is made and delivered, for retention; on the public
        // key only (see `inventory::list_keys`).
        public.push(Attribute::StartDate(today));
    }
    Ok((public, private))
}

/// What a made pair must show before it is handed on: a private key that
/// is sensitive, not extractable and on the token, and a readable public
/// key of the size asked for, still under the CKA_ID `id` it was made
/// with. Returns its SubjectPublicKeyInfo; only reads.
fn check_made(session: &Session, pair: &Pair, key_type: KeyType, id: &[u8]) -> Result<Vec<u8>> {
    check_private_attributes(session, pair.private)?;
    let spki_der = read_public_key(session, pair.public, key_type, Some(id))?;
    if let KeyType::Rsa { bits: want } = key_type {
        let bits = spki::rsa_modulus_bits(&spki_der)?;
        if bits != want {
            return Err(Error::EncodeKey(
                format!("asked for RSA-{want} but the token made RSA-{bits}").into(),
            ));
        }
    }
    Ok(spki_der)
}

/// Refuses sizes outside the range the token reports for the key-pair
/// mechanism (TPMs stop at RSA-3072), before any key is made.
fn check_key_size(
    backend: &Pkcs11Backend,
    mech: MechanismType,
    key_type: KeyType,
    bits: u32,
) -> Result<()> {
    let info = backend
        .ctx
        .pkcs11
        .get_mechanism_info(backend.slot, mech)
        .map_err(|e| Error::Token {
            op: "C_GetMechanismInfo",
            token: backend.token_label().to_owned(),
            detail: describe(&e).context(mech),
        })?;
    let (min, max) = (info.min_key_size(), info.max_key_size());
    let bits = bits as usize;
    // Some tokens report 0 for "no stated limit"; Edwards ranges are
    // reported inconsistently (255, 256 or 32), so only RSA and EC are checked.
    if key_type == KeyType::Ed25519 {
        return Ok(());
    }
    if (min != 0 && bits < min) || (max != 0 && bits > max) {
        return Err(Error::Unsupported {
            token: backend.token_label().to_owned(),
            what: format!("{key_type} key generation (its {mech} offers {min} to {max} bits)"),
        });
    }
    Ok(())
}

/// Reads back what the token made: a token that silently ignored
/// CKA_SENSITIVE or CKA_EXTRACTABLE must not get its key used.
fn check_private_attributes(session: &Session, key: ObjectHandle) -> Result<()> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
            ],
        )
        .map_err(|e| {
            Error::KeyGen(describe(&e).context("reading the new private key's attributes"))
        })?;
    let (mut sensitive, mut extractable, mut token) = (false, true, false);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = v,
            Attribute::Extractable(v) => extractable = v,
            Attribute::Token(v) => token = v,
            _ => {}
        }
    }
    if sensitive && !extractable && token {
        Ok(())
    } else {
        Err(Error::KeyGen(
            format!(
                "the token made a private key with CKA_SENSITIVE={sensitive}, CKA_EXTRACTABLE={extractable}, \
                 CKA_TOKEN={token}; refusing to use it"
            )
            .into(),
        ))
    }
}

/// The public object's key as a DER SubjectPublicKeyInfo: CKA_MODULUS and
/// CKA_PUBLIC_EXPONENT (RSA) or CKA_EC_POINT (EC, Ed25519). Public material
/// is read from the public object, since some tokens expose none on the
/// private one. With `made_with`, in the same call, its CKA_ID must still
/// be that one: a token that lost it (SoftHSM 2.6 under a second process,
/// see [`super::softhsm_conf::shared_store_warning`]) would leave a key
/// without its public half once delivered.
pub(super) fn read_public_key(
    session: &Session,
    key: ObjectHandle,
    key_type: KeyType,
    made_with: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let mut wanted = match key_type {
        KeyType::Rsa { .. } => vec![AttributeType::Modulus, AttributeType::PublicExponent],
        _ => vec![AttributeType::EcPoint],
    };
    if made_with.is_some() {
        wanted.push(AttributeType::Id);
    }
    let attrs = session
        .get_attributes(key, &wanted)
        .map_err(|e| Error::EncodeKey(describe(&e).context("reading the public key")))?;
    let (mut modulus, mut exponent, mut point, mut id) = (None, None, None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::PublicExponent(e) => exponent = Some(e),
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::Id(i) => id = Some(i),
            _ => {}
        }
    }
    if let Some(want) = made_with {
        if id.as_deref() != Some(want) {
            return Err(Error::EncodeKey(
                "the token returned the new public key without the CKA_ID it was made with".into(),
            ));
        }
    }
    match (key_type, modulus, exponent, point) {
        (KeyType::Rsa { .. }, Some(m), Some(e), _) => spki::rsa_spki_der(&m, &e),
        (KeyType::Rsa { .. }, ..) => Err(Error::EncodeKey(
            "the token returned no CKA_MODULUS / CKA_PUBLIC_EXPONENT for the public key".into(),
        )),
        (_, _, _, Some(p)) => spki::ec_spki_der(key_type, &p),
        _ => Err(Error::EncodeKey(
            "the token returned no CKA_EC_POINT for the public key".into(),
        )),
    }
}

/// The two objects of a key pair this process made.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pair {
    pub(super) private: ObjectHandle,
    pub(super) public: ObjectHandle,
}

impl Pair {
    /// Whether these are the objects behind `key`.
    pub(super) fn is(&self, key: &GeneratedKey) -> bool {
        self.private.handle() == key.handles.private && self.public.handle() == key.handles.public
    }
}

/// Destroys both objects, trying the second even if the first fails.
pub(super) fn destroy_pair(session: &Session, pair: Pair) -> std::result::Result<(), String> {
    let mut failures = Vec::new();
    for (what, handle) in [("private", pair.private), ("public", pair.public)] {
        if let Err(e) = session.destroy_object(handle) {
            failures.push(format!("{what} key: {}", describe(&e)));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
