//! The three UIKit products whose callback configuration the gateway keeps per SDKAppID:
//! TUICallKit (`call`), TUIRoomKit (`room`) and TUILiveKit (`live`). Each has its own API
//! family (`v4/call_config/*`, `v4/room_config/*`, `v4/live_config/*`) with the same
//! request convention and answer shape, and its own documented command words.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One UIKit product. Ordered as written here, which is the order targets of one
/// (app, region) are listed in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    /// TUICallKit; what an app watches when its config names no product.
    #[default]
    Call,
    /// TUIRoomKit.
    Room,
    /// TUILiveKit.
    Live,
}

/// TUICallKit's documented command words.
const CALL_COMMANDS: [&str; 3] = [
    "Call.CallbackAfterStartCall",
    "Call.CallbackAfterEndCall",
    "Call.CallbackAfterMemberChanged",
];

/// TUIRoomKit's documented command words; `Room.CallbackUpdateRoomInfo` is the older
/// spelling of `Room.CallbackAfterUpdateRoomInfo` that older pages and samples still use.
const ROOM_COMMANDS: [&str; 7] = [
    "Room.CallbackAfterCreateRoom",
    "Room.CallbackAfterDestroyRoom",
    "Room.CallbackAfterUpdateRoomInfo",
    "Room.CallbackUpdateRoomInfo",
    "Room.CallbackAfterMemberEnter",
    "Room.CallbackAfterMemberLeave",
    "Mic.CallbackAfterSeatInfoChanged",
];

/// TUILiveKit's documented command words, by section: room, user, seat, battle, gift,
/// message and follow (the last two are shared with Chat's callbacks).
const LIVE_COMMANDS: [&str; 19] = [
    "Live.CallbackAfterCreateRoom",
    "Live.CallbackAfterDestroyRoom",
    "Live.CallbackAfterUpdateRoomInfo",
    "Live.CallbackAfterSetMetadata",
    "Live.CallbackAfterDelMetadata",
    "Live.CallbackAfterCreateRoomReachingThreshold",
    "Live.CallbackAfterMemberStateChanged",
    "Live.CallbackAfterChangeOwner",
    "Live.CallbackAfterModifyAdmin",
    "Mic.CallbackAfterSeatInfoChanged",
    "Live.CallbackAfterCreateBattle",
    "Live.CallbackAfterStartBattle",
    "Live.CallbackAfterEndBattle",
    "Live.CallbackBeforeSendGift",
    "Live.CallbackBeforeCallBackNotBlock",
    "Group.CallbackAfterSendMsg",
    "Group.CallbackBeforeSendMsg",
    "Follow.CallbackAfterFollowAdd",
    "Follow.CallbackAfterFollowDelete",
];

impl Product {
    /// Every product, in order.
    pub const ALL: [Product; 3] = [Product::Call, Product::Room, Product::Live];

    /// The name in configs, labels, JSON, logs and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Call => "call",
            Product::Room => "room",
            Product::Live => "live",
        }
    }

    /// The product named `name` as configs write it.
    pub fn from_name(name: &str) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The UIKit's own name, for messages.
    pub fn kit(self) -> &'static str {
        match self {
            Product::Call => "TUICallKit",
            Product::Room => "TUIRoomKit",
            Product::Live => "TUILiveKit",
        }
    }

    /// The API family under `/v4/`: `call_config`, `room_config` or `live_config`.
    pub fn api_family(self) -> &'static str {
        match self {
            Product::Call => "call_config",
            Product::Room => "room_config",
            Product::Live => "live_config",
        }
    }

    /// Whether `set_callback` only creates: TUIRoomKit's and TUILiveKit's answer 100300
    /// when a configuration exists and have `update_callback` to change one; TUICallKit's
    /// overwrites, and its family has no `update_callback`.
    pub fn set_creates_only(self) -> bool {
        self != Product::Call
    }

    /// The command words the product's documentation lists. Tencent adds words, so a word
    /// outside these is worth a warning, not an error.
    pub fn documented_commands(self) -> &'static [&'static str] {
        match self {
            Product::Call => &CALL_COMMANDS,
            Product::Room => &ROOM_COMMANDS,
            Product::Live => &LIVE_COMMANDS,
        }
    }

    /// The prefix only this product's own words carry (`Call.`, `Room.`, `Live.`); shared
    /// prefixes such as `Mic.` are not one.
    pub fn own_prefix(self) -> &'static str {
        match self {
            Product::Call => "Call.",
            Product::Room => "Room.",
            Product::Live => "Live.",
        }
    }

    /// The other product whose own prefix `word` carries, if any: such a word can never be
    /// one of this product's.
    pub fn foreign_owner(self, word: &str) -> Option<Product> {
        Product::ALL
            .into_iter()
            .find(|other| *other != self && word.starts_with(other.own_prefix()))
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per product, for the few products an app watches: a sorted list, not a
/// `BTreeMap`, whose smallest node holds room for eleven entries (about 1.4 KiB per app
/// with one `Expected`, 14 MiB over 10,000 apps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductMap<T>(Vec<(Product, T)>);

impl<T> Default for ProductMap<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> ProductMap<T> {
    /// Sets `product`'s value, replacing any earlier one; the list stays in product order.
    pub fn insert(&mut self, product: Product, value: T) {
        match self.0.binary_search_by_key(&product, |(p, _)| *p) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (product, value)),
        }
    }

    pub fn get(&self, product: &Product) -> Option<&T> {
        self.0.iter().find(|(p, _)| p == product).map(|(_, v)| v)
    }

    pub fn contains_key(&self, product: &Product) -> bool {
        self.get(product).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The products, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Product> {
        self.0.iter().map(|(p, _)| p)
    }

    /// Each product with its value to change, in product order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Product, &mut T)> {
        self.0.iter_mut().map(|(p, v)| (&*p, v))
    }

    /// Each product with its value, in product order.
    pub fn iter(&self) -> impl Iterator<Item = (&Product, &T)> {
        self.0.iter().map(|(p, v)| (p, v))
    }
}

impl<T> std::ops::Index<&Product> for ProductMap<T> {
    type Output = T;

    /// Like a map's index: only for a product known to be there.
    #[allow(clippy::panic)]
    fn index(&self, product: &Product) -> &T {
        match self.get(product) {
            Some(value) => value,
            None => panic!("no {product} in this ProductMap"),
        }
    }
}

impl<T> FromIterator<(Product, T)> for ProductMap<T> {
    fn from_iter<I: IntoIterator<Item = (Product, T)>>(iter: I) -> Self {
        let mut map = ProductMap::default();
        for (product, value) in iter {
            map.insert(product, value);
        }
        map
    }
}

impl<'a, T> IntoIterator for &'a ProductMap<T> {
    type Item = (&'a Product, &'a T);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Product, T)>,
        fn(&'a (Product, T)) -> (&'a Product, &'a T),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(p, v)| (p, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for p in Product::ALL {
            assert_eq!(Product::from_name(p.as_str()), Some(p));
            let json = serde_json::to_string(&p).expect("serializes");
            assert_eq!(json, format!("\"{p}\""));
        }
        assert_eq!(Product::from_name("Call"), None);
        assert_eq!(Product::default(), Product::Call);
    }

    #[test]
    fn foreign_prefixes_and_shared_words() {
        let table = [
            (
                Product::Call,
                "Room.CallbackAfterCreateRoom",
                Some(Product::Room),
            ),
            (
                Product::Call,
                "Live.CallbackAfterCreateRoom",
                Some(Product::Live),
            ),
            (Product::Call, "Call.CallbackAfterEndCall", None),
            (Product::Call, "Mic.CallbackAfterSeatInfoChanged", None),
            (
                Product::Room,
                "Call.CallbackAfterEndCall",
                Some(Product::Call),
            ),
            (
                Product::Room,
                "Live.CallbackAfterEndBattle",
                Some(Product::Live),
            ),
            (Product::Room, "Mic.CallbackAfterSeatInfoChanged", None),
            (
                Product::Live,
                "Room.CallbackAfterCreateRoom",
                Some(Product::Room),
            ),
            (
                Product::Live,
                "Call.CallbackAfterStartCall",
                Some(Product::Call),
            ),
            (Product::Live, "Group.CallbackAfterSendMsg", None),
        ];
        for (product, word, owner) in table {
            assert_eq!(product.foreign_owner(word), owner, "{product} {word}");
        }
        // Every documented word belongs to its product.
        for p in Product::ALL {
            for word in p.documented_commands() {
                assert_eq!(p.foreign_owner(word), None, "{p} {word}");
            }
        }
        assert!(
            Product::Room
                .documented_commands()
                .contains(&"Room.CallbackUpdateRoomInfo")
        );
        assert!(
            Product::Live
                .documented_commands()
                .contains(&"Mic.CallbackAfterSeatInfoChanged")
        );
    }

    #[test]
    fn a_product_map_keeps_product_order_and_one_value_each() {
        let mut map: ProductMap<u32> = [(Product::Live, 3), (Product::Call, 1)]
            .into_iter()
            .collect();
        map.insert(Product::Room, 2);
        map.insert(Product::Call, 10);
        assert_eq!(
            map.iter().map(|(p, v)| (*p, *v)).collect::<Vec<_>>(),
            vec![(Product::Call, 10), (Product::Room, 2), (Product::Live, 3)]
        );
        assert_eq!(map.len(), 3);
        assert_eq!(map[&Product::Room], 2);
        assert!(!ProductMap::<u32>::default().contains_key(&Product::Call));
    }
}
