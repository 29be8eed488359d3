//! "Did you mean …?": the nearest known name to a mistyped key.
//!
//! Why this exists apart: every unknown key a manifest has (a top-level key,
//! a job key, a parameter, a CSV column) is told with the name it was most
//! likely meant to be, by edit distance. Nothing here is async.

use super::{Diagnostic, Loc};

pub(crate) fn unknown(loc: &Loc, what: &str, name: &str, allowed: &[&str]) -> Diagnostic {
    let hint = match suggest(name, allowed) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("expected one of: {}", allowed.join(", ")),
    };
    Diagnostic::error(loc, format!("unknown {what} `{name}`: {hint}"))
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&name, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PARAMS;

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("guidence_scale", PARAMS), Some("guidance_scale"));
        assert_eq!(suggest("num_image", PARAMS), Some("num_images"));
        assert_eq!(suggest("Prompt", PARAMS), Some("prompt"));
        assert_eq!(suggest("colour", PARAMS), None);
    }

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
