//! Runs as a person names them: listings show the start of each id, long
//! enough to tell apart every run they list, and every verb that takes a
//! run takes its whole id or any start of it that only one run has.
//!
//! A run id is a UUIDv7: its first 13 characters are the millisecond it
//! was made, so runs made in the same millisecond share them. A listing
//! shows 13 characters, and more (up to the next group of the id) for
//! runs that share them with another run it lists.

use crate::store::Store;

/// Why a run id given on the command line names no single run.
#[derive(Debug, thiserror::Error)]
pub enum UnknownRun {
    #[error(
        "no run has an id starting with '{0}': `cronwerk runs` lists them (ids are \
         kept with their runs; older ones were deleted by retention)"
    )]
    NoMatch(String),
    #[error(
        "'{given}' starts the ids of several runs ({}{}): give more of it",
        .ids.join(", "),
        if *.more { ", ..." } else { "" }
    )]
    Ambiguous {
        given: String,
        ids: Vec<String>,
        more: bool,
    },
    #[error(
        "'{0}' is not a run id: run ids are lowercase hexadecimal digits and dashes, as \
         `cronwerk runs` shows them"
    )]
    Malformed(String),
}

/// The most ids an ambiguity names.
const NAMED: u32 = 5;

/// The id of the one run whose id is `given` or starts with it.
pub async fn resolve(store: &dyn Store, given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    if given.is_empty() || !given.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(UnknownRun::Malformed(given.to_owned()).into());
    }
    let given = given.to_ascii_lowercase();
    let mut ids = store.run_ids_starting_with(&given, NAMED + 1).await?;
    if let Some(exact) = ids.iter().find(|id| **id == given) {
        return Ok(exact.clone());
    }
    match ids.len() {
        0 => Err(UnknownRun::NoMatch(given).into()),
        1 => Ok(ids.remove(0)),
        n => {
            ids.truncate(NAMED as usize);
            Err(UnknownRun::Ambiguous {
                given,
                ids,
                more: n > NAMED as usize,
            }
            .into())
        }
    }
}

/// Where an id's groups end (`8-4-4-4-12`): a shown id stops at one.
const GROUP_ENDS: [usize; 4] = [13, 18, 23, 36];

/// How each of `ids` is shown in a listing of them all: its first 13
/// characters, or more where another id in the list shares them.
pub fn shown(ids: &[&str]) -> Vec<String> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    // The longest start each id shares with another: in sorted order, the
    // longest shared with a neighbour.
    let mut shared = vec![0usize; ids.len()];
    for pair in order.windows(2) {
        let (a, b) = (ids[pair[0]], ids[pair[1]]);
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        shared[pair[0]] = shared[pair[0]].max(common);
        shared[pair[1]] = shared[pair[1]].max(common);
    }
    ids.iter()
        .zip(shared)
        .map(|(id, shared)| {
            let length = GROUP_ENDS
                .into_iter()
                .find(|&end| end > shared)
                .unwrap_or(id.len());
            id.chars().take(length).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_in_one_millisecond_are_shown_until_they_differ() {
        let ids = [
            "019ae3c1-2f00-7a11-8b22-000000000001",
            "019ae3c1-2f00-7a11-9c33-000000000002",
            "019ae3c1-2f00-7b44-8d55-000000000003",
            "019ae3c1-3000-7e66-8f77-000000000004",
        ];
        assert_eq!(
            shown(&ids),
            [
                "019ae3c1-2f00-7a11-8b22",
                "019ae3c1-2f00-7a11-9c33",
                "019ae3c1-2f00-7b44",
                "019ae3c1-3000",
            ]
        );
        let shown = shown(&ids);
        for (i, s) in shown.iter().enumerate() {
            let matching = ids.iter().filter(|id| id.starts_with(s.as_str())).count();
            assert_eq!(matching, 1, "{s} names run {i} alone");
        }
    }

    #[test]
    fn equal_ids_and_short_ones_are_shown_whole() {
        assert_eq!(shown(&["abc", "abc"]), ["abc", "abc"]);
        assert_eq!(shown(&["r1"]), ["r1"]);
        assert!(shown(&[]).is_empty());
    }
}
