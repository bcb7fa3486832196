//! A persistent (structurally shared) Merkle-Patricia trie over 32-byte hashed keys.
//!
//! Every update returns a new trie that shares all untouched nodes with the old one, so
//! each block keeps its own state snapshot for the price of the nodes it changed, and the
//! root of a block costs hashing only the changed paths: node hashes are cached inside
//! the nodes and survive in every snapshot that shares them.
//!
//! Keys are always 64 nibbles (keccak of an address or a storage slot), so no key is a
//! prefix of another and branch nodes never carry values.

use std::sync::{Arc, OnceLock};

use alloy_primitives::{keccak256, B256};
use alloy_rlp::{BufMut, Encodable, Header, EMPTY_STRING_CODE};

/// The root of an empty trie: keccak256(rlp("")).
pub const EMPTY_ROOT: B256 = alloy_trie::EMPTY_ROOT_HASH;

/// What a leaf stores: the RLP bytes placed (as an RLP string) in the leaf node.
pub trait TrieValue: Clone {
    fn encode_value(&self, out: &mut Vec<u8>);
}

type Nibbles = Box<[u8]>;

enum Kind<V> {
    /// A leaf keeps its whole key (no allocation for its path): its path is the key's
    /// nibbles from `start` on.
    Leaf {
        key: B256,
        start: u8,
        value: V,
    },
    Ext {
        path: Nibbles,
        child: Arc<Node<V>>,
    },
    /// The children present, in nibble order; bit `i` of `mask` says whether child `i` is.
    Branch {
        mask: u16,
        children: Box<[Arc<Node<V>>]>,
    },
}

/// A branch's children as an array (for building a changed branch).
type Children<V> = [Option<Arc<Node<V>>>; 16];

fn branch_child<V>(mask: u16, children: &[Arc<Node<V>>], i: usize) -> Option<&Arc<Node<V>>> {
    if mask & (1 << i) == 0 {
        return None;
    }
    children.get((mask & ((1u16 << i) - 1)).count_ones() as usize)
}

fn expand<V>(mask: u16, children: &[Arc<Node<V>>]) -> Children<V> {
    let mut out: Children<V> = Default::default();
    let mut present = children.iter();
    for (i, slot) in out.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *slot = present.next().cloned();
        }
    }
    out
}

fn branch<V>(children: Children<V>) -> Arc<Node<V>> {
    let mut mask = 0u16;
    let mut present = Vec::with_capacity(children.iter().flatten().count());
    for (i, c) in children.into_iter().enumerate() {
        if let Some(c) = c {
            mask |= 1 << i;
            present.push(c);
        }
    }
    node(Kind::Branch {
        mask,
        children: present.into_boxed_slice(),
    })
}

struct Node<V> {
    kind: Kind<V>,
    /// The node's reference in its parent: its RLP when shorter than 32 bytes, else its hash.
    reference: OnceLock<NodeRef>,
}

#[derive(Clone)]
enum NodeRef {
    Inline(Vec<u8>),
    Hash(B256),
}

impl NodeRef {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            NodeRef::Inline(rlp) => out.extend_from_slice(rlp),
            NodeRef::Hash(h) => h.encode(out),
        }
    }
    fn len(&self) -> usize {
        match self {
            NodeRef::Inline(rlp) => rlp.len(),
            NodeRef::Hash(_) => 33,
        }
    }
}

/// A trie snapshot. Cloning is O(1).
pub struct Trie<V> {
    root: Option<Arc<Node<V>>>,
}

impl<V> Clone for Trie<V> {
    fn clone(&self) -> Self {
        Trie {
            root: self.root.clone(),
        }
    }
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Trie { root: None }
    }
}

impl<V> std::fmt::Debug for Trie<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trie")
            .field("empty", &self.root.is_none())
            .finish()
    }
}

fn nibbles(key: &B256) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, b) in key.iter().enumerate() {
        out[2 * i] = b >> 4;
        out[2 * i + 1] = b & 0x0f;
    }
    out
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn node<V>(kind: Kind<V>) -> Arc<Node<V>> {
    Arc::new(Node {
        kind,
        reference: OnceLock::new(),
    })
}

/// A leaf for `key` at `depth` nibbles from the root.
fn leaf<V>(key: B256, depth: usize, value: V) -> Arc<Node<V>> {
    node(Kind::Leaf {
        key,
        start: depth as u8,
        value,
    })
}

fn concat(a: &[u8], b: &[u8]) -> Nibbles {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.into()
}

/// Put `prefix` (the nibbles just above `n`) in front of `n`, merging with a leaf or
/// extension so that the trie stays in its canonical shape.
fn prefixed<V: Clone>(prefix: &[u8], n: Arc<Node<V>>) -> Arc<Node<V>> {
    if prefix.is_empty() {
        return n;
    }
    match &n.kind {
        Kind::Leaf { key, start, value } => {
            debug_assert!(
                *start as usize >= prefix.len()
                    && nibbles(key)[*start as usize - prefix.len()..*start as usize] == *prefix
            );
            leaf(*key, *start as usize - prefix.len(), value.clone())
        }
        Kind::Ext { path, child } => node(Kind::Ext {
            path: concat(prefix, path),
            child: child.clone(),
        }),
        Kind::Branch { .. } => node(Kind::Ext {
            path: prefix.into(),
            child: n,
        }),
    }
}

/// Insert `key` (nibbles `full`) below `n`, which sits `depth` nibbles from the root.
fn insert<V: Clone>(
    n: Option<&Arc<Node<V>>>,
    key: &B256,
    full: &[u8; 64],
    depth: usize,
    value: V,
) -> Arc<Node<V>> {
    let Some(n) = n else {
        return leaf(*key, depth, value);
    };
    let path = &full[depth..];
    match &n.kind {
        Kind::Leaf {
            key: lk,
            start,
            value: lv,
        } => {
            if lk == key {
                return leaf(*key, depth, value);
            }
            let theirs = nibbles(lk);
            let lp = &theirs[*start as usize..];
            let c = common_prefix(lp, path);
            let mut children: Children<V> = Default::default();
            children[lp[c] as usize] = Some(leaf(*lk, *start as usize + c + 1, lv.clone()));
            children[path[c] as usize] = Some(leaf(*key, depth + c + 1, value));
            prefixed(&path[..c], branch(children))
        }
        Kind::Ext { path: ep, child } => {
            let c = common_prefix(ep, path);
            if c == ep.len() {
                let child = insert(Some(child), key, full, depth + c, value);
                return node(Kind::Ext {
                    path: ep.clone(),
                    child,
                });
            }
            let mut children: Children<V> = Default::default();
            children[ep[c] as usize] = Some(prefixed(&ep[c + 1..], child.clone()));
            children[path[c] as usize] = Some(leaf(*key, depth + c + 1, value));
            prefixed(&path[..c], branch(children))
        }
        Kind::Branch { mask, children } => {
            let mut children = expand(*mask, children);
            let i = path[0] as usize;
            children[i] = Some(insert(children[i].as_ref(), key, full, depth + 1, value));
            branch(children)
        }
    }
}

/// Remove `key` below `n` (at `depth`); `None` if the subtrie became empty. Returns the
/// same node when the key is absent, so untouched subtries keep their cached hashes.
fn remove<V: Clone>(
    n: &Arc<Node<V>>,
    key: &B256,
    full: &[u8; 64],
    depth: usize,
) -> Option<Arc<Node<V>>> {
    match &n.kind {
        Kind::Leaf { key: lk, .. } => {
            if lk == key {
                None
            } else {
                Some(n.clone())
            }
        }
        Kind::Ext { path: ep, child } => {
            if !full[depth..].starts_with(ep) {
                return Some(n.clone());
            }
            let new_child = remove(child, key, full, depth + ep.len())?;
            if Arc::ptr_eq(&new_child, child) {
                return Some(n.clone());
            }
            Some(prefixed(ep, new_child))
        }
        Kind::Branch { mask, children } => {
            let i = full[depth] as usize;
            let Some(old) = branch_child(*mask, children, i) else {
                return Some(n.clone());
            };
            let new = remove(old, key, full, depth + 1);
            if new.as_ref().is_some_and(|x| Arc::ptr_eq(x, old)) {
                return Some(n.clone());
            }
            let mut children = expand(*mask, children);
            children[i] = new;
            let mut present = children
                .iter()
                .enumerate()
                .filter_map(|(j, c)| c.as_ref().map(|c| (j, c)));
            let first = present.next();
            match (first, present.next()) {
                (None, _) => None,
                (Some((j, only)), None) => Some(prefixed(&[j as u8], only.clone())),
                _ => Some(branch(children)),
            }
        }
    }
}

fn get<'a, V>(mut n: &'a Arc<Node<V>>, key: &B256, full: &[u8; 64]) -> Option<&'a V> {
    let mut depth = 0;
    loop {
        match &n.kind {
            Kind::Leaf { key: lk, value, .. } => return (lk == key).then_some(value),
            Kind::Ext { path: ep, child } => {
                if !full.get(depth..)?.starts_with(ep) {
                    return None;
                }
                depth += ep.len();
                n = child;
            }
            Kind::Branch { mask, children } => {
                n = branch_child(*mask, children, *full.get(depth)? as usize)?;
                depth += 1;
            }
        }
    }
}

/// Hex-prefix encoding of a nibble path (yellow paper, appendix C).
fn hex_prefix(path: &[u8], is_leaf: bool, out: &mut Vec<u8>) {
    let flag = if is_leaf { 2u8 } else { 0 };
    let mut bytes = Vec::with_capacity(path.len() / 2 + 1);
    if path.len() % 2 == 1 {
        bytes.push(((flag | 1) << 4) | path[0]);
        for pair in path[1..].chunks(2) {
            bytes.push((pair[0] << 4) | pair[1]);
        }
    } else {
        bytes.push(flag << 4);
        for pair in path.chunks(2) {
            bytes.push((pair[0] << 4) | pair[1]);
        }
    }
    bytes.as_slice().encode(out);
}

impl<V: TrieValue> Node<V> {
    fn rlp(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        match &self.kind {
            Kind::Leaf { key, start, value } => {
                hex_prefix(&nibbles(key)[*start as usize..], true, &mut payload);
                let mut v = Vec::new();
                value.encode_value(&mut v);
                v.as_slice().encode(&mut payload);
            }
            Kind::Ext { path, child } => {
                hex_prefix(path, false, &mut payload);
                child.reference().encode(&mut payload);
            }
            Kind::Branch { mask, children } => {
                payload.reserve(children.iter().map(|c| c.reference().len()).sum::<usize>() + 17);
                for i in 0..16 {
                    match branch_child(*mask, children, i) {
                        Some(c) => c.reference().encode(&mut payload),
                        None => payload.put_u8(EMPTY_STRING_CODE),
                    }
                }
                payload.put_u8(EMPTY_STRING_CODE);
            }
        }
        let mut out = Vec::with_capacity(payload.len() + 3);
        Header {
            list: true,
            payload_length: payload.len(),
        }
        .encode(&mut out);
        out.extend_from_slice(&payload);
        out
    }

    fn reference(&self) -> &NodeRef {
        self.reference.get_or_init(|| {
            let rlp = self.rlp();
            if rlp.len() < 32 {
                NodeRef::Inline(rlp)
            } else {
                NodeRef::Hash(keccak256(&rlp))
            }
        })
    }
}

impl<V: TrieValue> Trie<V> {
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// The value under `key` (already hashed).
    pub fn get(&self, key: &B256) -> Option<&V> {
        get(self.root.as_ref()?, key, &nibbles(key))
    }

    pub fn insert(&mut self, key: &B256, value: V) {
        self.root = Some(insert(self.root.as_ref(), key, &nibbles(key), 0, value));
    }

    pub fn remove(&mut self, key: &B256) {
        if let Some(r) = &self.root {
            self.root = remove(r, key, &nibbles(key), 0);
        }
    }

    /// The Merkle root. Cached per node: only nodes created since the last call are hashed.
    pub fn root(&self) -> B256 {
        match &self.root {
            None => EMPTY_ROOT,
            Some(r) => match r.reference() {
                NodeRef::Hash(h) => *h,
                NodeRef::Inline(rlp) => keccak256(rlp),
            },
        }
    }

    /// Every (key, value) in key order.
    pub fn entries(&self) -> Vec<(B256, V)> {
        let mut out = Vec::new();
        if let Some(r) = &self.root {
            leaves(r, &mut |k, v| out.push((k, v.clone())));
        }
        out
    }

    /// The keys whose values may differ between `older` and `self`, each with its value in
    /// both (`None`: absent). Subtrees the two snapshots share are skipped without being
    /// visited, so the cost follows what changed, not the trie's size; where the shape
    /// changed, the leaves below are compared and unchanged ones may be reported too (the
    /// caller compares values).
    pub fn diff<'a>(
        &'a self,
        older: &'a Trie<V>,
        f: &mut dyn FnMut(B256, Option<&'a V>, Option<&'a V>),
    ) {
        diff_nodes(older.root.as_ref(), self.root.as_ref(), f);
    }
}

/// Every leaf under `n`, in key order.
fn leaves<'a, V>(n: &'a Arc<Node<V>>, out: &mut dyn FnMut(B256, &'a V)) {
    match &n.kind {
        Kind::Leaf { key, value, .. } => out(*key, value),
        Kind::Ext { child, .. } => leaves(child, out),
        Kind::Branch { children, .. } => {
            for c in children.iter() {
                leaves(c, out);
            }
        }
    }
}

fn diff_nodes<'a, V>(
    a: Option<&'a Arc<Node<V>>>,
    b: Option<&'a Arc<Node<V>>>,
    f: &mut dyn FnMut(B256, Option<&'a V>, Option<&'a V>),
) {
    match (a, b) {
        (None, None) => {}
        (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
        (Some(a), Some(b)) => match (&a.kind, &b.kind) {
            (
                Kind::Branch {
                    mask: ma,
                    children: ca,
                },
                Kind::Branch {
                    mask: mb,
                    children: cb,
                },
            ) => {
                for i in 0..16 {
                    diff_nodes(branch_child(*ma, ca, i), branch_child(*mb, cb, i), f);
                }
            }
            (
                Kind::Ext {
                    path: pa,
                    child: ca,
                },
                Kind::Ext {
                    path: pb,
                    child: cb,
                },
            ) if pa == pb => {
                diff_nodes(Some(ca), Some(cb), f);
            }
            _ => {
                // Different shapes: compare the leaves below both.
                let (mut old, mut new) = (Vec::new(), Vec::new());
                leaves(a, &mut |k, v| old.push((k, v)));
                leaves(b, &mut |k, v| new.push((k, v)));
                let (mut i, mut j) = (0, 0);
                while i < old.len() || j < new.len() {
                    match (old.get(i), new.get(j)) {
                        (Some(&(ka, va)), Some(&(kb, vb))) if ka == kb => {
                            f(ka, Some(va), Some(vb));
                            i += 1;
                            j += 1;
                        }
                        (Some(&(ka, va)), Some(&(kb, _))) if ka < kb => {
                            f(ka, Some(va), None);
                            i += 1;
                        }
                        (Some(&(ka, va)), None) => {
                            f(ka, Some(va), None);
                            i += 1;
                        }
                        (_, Some(&(kb, vb))) => {
                            f(kb, None, Some(vb));
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
            }
        },
        (Some(a), None) => leaves(a, &mut |k, v| f(k, Some(v), None)),
        (None, Some(b)) => leaves(b, &mut |k, v| f(k, None, Some(v))),
    }
}

/// Storage values: RLP of the big-endian integer without leading zeros.
impl TrieValue for alloy_primitives::U256 {
    fn encode_value(&self, out: &mut Vec<u8>) {
        self.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::U256;
    use alloy_trie::{HashBuilder, Nibbles as ANibbles};
    use rand::{Rng, SeedableRng};

    /// Reference root from alloy-trie's HashBuilder over the sorted entries.
    fn reference_root(entries: &std::collections::BTreeMap<B256, U256>) -> B256 {
        let mut hb = HashBuilder::default();
        for (k, v) in entries {
            let mut enc = Vec::new();
            v.encode(&mut enc);
            hb.add_leaf(ANibbles::unpack(k), &enc);
        }
        hb.root()
    }

    #[test]
    fn diff_reports_every_changed_key_with_both_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let keys: Vec<B256> = (0..300)
            .map(|_| B256::from(rng.gen::<[u8; 32]>()))
            .collect();
        let mut trie = Trie::default();
        let mut model = std::collections::BTreeMap::new();
        for round in 0..40 {
            let (older, older_model) = (trie.clone(), model.clone());
            // Few changes on a large trie, or many, or everything removed.
            let steps = if round % 10 == 9 { 400 } else { 1 + round % 7 };
            for _ in 0..steps {
                let k = keys[rng.gen_range(0..keys.len())];
                if rng.gen_bool(0.35) {
                    trie.remove(&k);
                    model.remove(&k);
                } else {
                    let v = U256::from(rng.gen_range(1u64..1000));
                    trie.insert(&k, v);
                    model.insert(k, v);
                }
            }
            let mut reported = std::collections::BTreeMap::new();
            trie.diff(&older, &mut |k, a, b| {
                assert!(
                    reported.insert(k, (a.copied(), b.copied())).is_none(),
                    "{k} twice"
                );
            });
            for k in &keys {
                let (was, is) = (older_model.get(k).copied(), model.get(k).copied());
                match reported.get(k) {
                    Some(&(a, b)) => assert_eq!((a, b), (was, is), "round {round} key {k}"),
                    None => assert_eq!(was, is, "round {round}: change of {k} not reported"),
                }
            }
            // Nothing shared is visited: a diff with itself reports nothing.
            trie.diff(&trie.clone(), &mut |k, _, _| {
                panic!("{k} reported against itself")
            });
        }
    }

    #[test]
    fn empty_root() {
        assert_eq!(Trie::<U256>::default().root(), EMPTY_ROOT);
    }

    #[test]
    fn matches_hash_builder_under_random_inserts_and_removes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..24 {
            let mut model = std::collections::BTreeMap::new();
            let mut trie = Trie::default();
            let keyspace: Vec<B256> = (0..(round * 4 + 3))
                .map(|_| B256::from(rng.gen::<[u8; 32]>()))
                .collect();
            // keys sharing long prefixes exercise extensions
            let mut keys = keyspace.clone();
            for k in keyspace.iter().take(4) {
                let mut near = *k;
                near.0[31] ^= 1;
                keys.push(near);
                let mut near = *k;
                near.0[20] ^= 0x10;
                keys.push(near);
            }
            let mut snapshots = Vec::new();
            for step in 0..(keys.len() * 3) {
                let k = keys[rng.gen_range(0..keys.len())];
                if rng.gen_bool(0.3) {
                    trie.remove(&k);
                    model.remove(&k);
                } else {
                    let shift = rng.gen_range(0..60);
                    let v = U256::from(rng.gen_range(1u64..u64::MAX >> shift));
                    trie.insert(&k, v);
                    model.insert(k, v);
                }
                if step % 5 == 0 {
                    assert_eq!(
                        trie.root(),
                        reference_root(&model),
                        "round {round} step {step} key {k} present {:?}",
                        model.get(&k)
                    );
                    snapshots.push((trie.clone(), model.clone()));
                }
            }
            assert_eq!(trie.root(), reference_root(&model));
            for (k, v) in &model {
                assert_eq!(trie.get(k), Some(v));
            }
            let listed: Vec<_> = trie.entries();
            assert_eq!(
                listed,
                model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
            );
            // old snapshots are untouched by later updates
            for (t, m) in snapshots {
                assert_eq!(t.root(), reference_root(&m));
            }
            // removing everything gives the empty trie
            for k in model.keys() {
                trie.remove(k);
            }
            assert!(trie.is_empty());
            assert_eq!(trie.root(), EMPTY_ROOT);
        }
    }
}
