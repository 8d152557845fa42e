//! Delegation path patterns, matched as python-tuf does: the target path and
//! the pattern are split at `/`, must have the same number of segments, and
//! each segment matches shell-style (`*`, `?`, `[seq]`, `[!seq]`), so `*`
//! never crosses a `/`.

/// Whether `target` matches the delegation pattern `pattern`.
pub fn path_matches(target: &str, pattern: &str) -> bool {
    let t: Vec<&str> = target.split('/').collect();
    let p: Vec<&str> = pattern.split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| segment_matches(t, p))
}

/// Shell-style match of one segment, iterative with one backtrack point for
/// `*` (linear in practice, no recursion).
fn segment_matches(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    ti += 1;
                    pi += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_matches(&p, pi, t[ti]) {
                        if matched {
                            ti += 1;
                            pi = next;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unclosed `[` is a literal, as in fnmatch.
                        ti += 1;
                        pi += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    ti += 1;
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`. Returns whether
/// it matched and the index after the class, or `None` if the class is not
/// closed.
fn class_matches(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == '!';
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn python_tuf_cases() {
        assert!(path_matches("foo.tgz", "*.tgz"));
        assert!(path_matches("targets/foo.tgz", "targets/*.tgz"));
        assert!(!path_matches("targets/more/foo.tgz", "targets/*.tgz"));
        assert!(!path_matches("foo-version-alpha.tgz", "foo-version-?.tgz"));
        assert!(path_matches("foo-version-a.tgz", "foo-version-?.tgz"));
        assert!(path_matches("a/b/c", "a/*/c"));
        assert!(!path_matches("a/c", "a/*/c"));
        assert!(path_matches("file1.txt", "file[0-9].txt"));
        assert!(!path_matches("filea.txt", "file[0-9].txt"));
        assert!(path_matches("filea.txt", "file[!0-9].txt"));
        assert!(path_matches("x", "*"));
        assert!(path_matches("", "*"));
        assert!(path_matches("abcabd", "*abd"));
        assert!(path_matches("a[b", "a[b"));
    }
}
