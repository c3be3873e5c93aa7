//! The CKA_IDs hsm-csr gives its key pairs, and how each is read back.
//!
//! A marked key's CKA_ID (on its private key; its public key is made under
//! the CKA_ID it will keep) is 32 bytes, the most some HSMs accept:
//!
//! ```text
//! "hsm" | kind (1) | host (4) | process (4) | start (4) | R (16 random bytes)
//! ```
//!
//! - `host`: SHA-256 of `/etc/machine-id`, the host name and the PID
//!   namespace (`/proc/self/ns/pid`), so two containers on one kernel, or
//!   two VMs cloned from one image, are two hosts;
//! - `process`: the owner's PID; `start`: SHA-256 of the boot id and the
//!   process start time (field 22 of `/proc/<pid>/stat`), so a reused PID,
//!   or the same PID after a reboot, is another owner;
//! - `kind`: [`KIND_PROCESS`] (only a process on the same host can tell
//!   whether the owner lives) or [`KIND_LEASED`] (a `serve` holding a lease
//!   in Redis, which any replica can check).
//!
//! Delivery gives the pair its final CKA_ID, `R` itself (16 random bytes,
//! as every delivered key has), or `hsm-pool` + `R` for a pool key; the
//! public key carries one of those from its making. So from a mark, a
//! sweep knows every CKA_ID the other half may carry, and removes them
//! all. The three forms have three lengths (32, 16 and 24 bytes), which
//! is how a change of CKA_ID is read back in one call.

/// Random bytes in every CKA_ID hsm-csr gives a key pair.
pub(crate) const ID_LEN: usize = 16;
/// The first bytes of every mark.
pub(crate) const MARK_PREFIX: [u8; 3] = *b"hsm";
/// Owner liveness is checked on its host only (`create`, `batch`, `serve`
/// without Redis).
pub const KIND_PROCESS: u8 = b'p';
/// The owner holds a lease in Redis while it runs.
pub const KIND_LEASED: u8 = b'l';
/// Length of a mark.
pub(crate) const MARK_LEN: usize = MARK_PREFIX.len() + 1 + OWNER_LEN + ID_LEN;
/// Length of an owner: host, process, start.
pub(crate) const OWNER_LEN: usize = 12;

/// The first bytes of a pool key's CKA_ID (`hsm-pool` in ASCII). With the
/// 16 random bytes after it, a pool CKA_ID is 24 bytes long and can never
/// equal the 16-byte CKA_ID of a key made on demand.
pub(crate) const POOL_ID_PREFIX: [u8; 8] = *b"hsm-pool";

/// Whether `id` is a pool key's CKA_ID: [`POOL_ID_PREFIX`] and 16 bytes.
pub(crate) fn is_pool_id(id: &[u8]) -> bool {
    id.len() == POOL_ID_PREFIX.len() + ID_LEN && id.starts_with(&POOL_ID_PREFIX)
}

/// Who made a marked key: one process on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// [`KIND_PROCESS`] or [`KIND_LEASED`].
    pub kind: u8,
    /// Host (and PID namespace) hash.
    pub host: [u8; 4],
    /// PID.
    pub pid: u32,
    /// Boot id and start time hash.
    pub start: [u8; 4],
}

impl Owner {
    /// The 12 bytes naming this owner (without its kind).
    pub fn bytes(&self) -> [u8; OWNER_LEN] {
        let mut b = [0u8; OWNER_LEN];
        b[..4].copy_from_slice(&self.host);
        b[4..8].copy_from_slice(&self.pid.to_be_bytes());
        b[8..].copy_from_slice(&self.start);
        b
    }
}

/// The mark for a key of `owner` whose random part is `r`.
pub fn mark(owner: &Owner, r: &[u8]) -> Vec<u8> {
    [&MARK_PREFIX[..], &[owner.kind], &owner.bytes(), r].concat()
}

/// A marked CKA_ID, decoded: its owner and random part.
pub(crate) fn decode(id: &[u8]) -> Option<(Owner, &[u8])> {
    if id.len() != MARK_LEN || !id.starts_with(&MARK_PREFIX) {
        return None;
    }
    let (&[_, _, _, kind], rest) = id.split_first_chunk::<4>()?;
    let (&host, rest) = rest.split_first_chunk::<4>()?;
    let (&pid, rest) = rest.split_first_chunk::<4>()?;
    let (&start, r) = rest.split_first_chunk::<4>()?;
    if kind != KIND_PROCESS && kind != KIND_LEASED {
        return None;
    }
    let owner = Owner {
        kind,
        host,
        pid: u32::from_be_bytes(pid),
        start,
    };
    Some((owner, r))
}

/// Every CKA_ID a pair marked `id` may carry: the mark, the delivered ID
/// and the pool ID, since a claim sets one object after the other.
pub(crate) fn every_form(id: &[u8]) -> Vec<Vec<u8>> {
    let Some((_, r)) = decode(id) else {
        return vec![id.to_vec()];
    };
    vec![id.to_vec(), r.to_vec(), [&POOL_ID_PREFIX[..], r].concat()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CKA_ID comes from the token: any length or kind is only not a mark.
    #[test]
    fn what_is_not_a_whole_mark_decodes_to_none() {
        let id = mark(&Owner::this_process(KIND_LEASED), &[3u8; ID_LEN]);
        assert!(decode(&id).is_some());
        for n in 0..id.len() {
            assert_eq!(decode(&id[..n]), None, "the first {n} bytes");
        }
        assert_eq!(decode(&[&id[..], &[0]].concat()), None);
        let mut other_kind = id.clone();
        other_kind[3] = b'x';
        assert_eq!(decode(&other_kind), None);
        assert_eq!(every_form(&id[..5]), [id[..5].to_vec()]);
    }

    #[test]
    fn a_mark_names_its_owner_and_every_form_of_the_key() {
        let me = Owner::this_process(KIND_PROCESS);
        let r = [7u8; ID_LEN];
        let id = mark(&me, &r);
        assert_eq!(id.len(), 32);
        let (owner, random) = decode(&id).unwrap();
        assert_eq!((owner, random), (me, &r[..]));
        let forms = every_form(&id);
        assert_eq!(forms[1], r);
        assert!(is_pool_id(&forms[2]));
        // A change of CKA_ID is read back by its length alone.
        let lengths: std::collections::BTreeSet<usize> = forms.iter().map(Vec::len).collect();
        assert_eq!(lengths.len(), 3, "{forms:?}");
        // Neither a delivered nor a pool ID is a mark, nor a mark of
        // another length or kind.
        assert!(decode(&r).is_none() && decode(&forms[2]).is_none());
        assert!(decode(&id[..31]).is_none());
        let mut other = id.clone();
        other[3] = b'x';
        assert!(decode(&other).is_none());
    }
}
