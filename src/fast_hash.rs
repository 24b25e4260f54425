//! Maps looked up on every request (models, key digests, metric series, local counters),
//! hashed with foldhash rather than std's SipHash: a lookup costs a fraction as much. Their
//! keys come from the config and the store, not from clients (a client's model name is only
//! looked up, never inserted), so the per-process random seed is all the resistance to
//! crafted collisions they need.

pub type RandomState = foldhash::fast::RandomState;
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, RandomState>;
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, RandomState>;
