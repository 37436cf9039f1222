//! The walker's primitives, shared by every section: objects and their
//! keys, key paths for errors, values shown in errors, and the scalar forms
//! (booleans, durations, sizes, file paths) that appear in several
//! sections. Sections import from here and from nothing beside them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::parse_duration;
use crate::error::Fault;
use crate::size::parse_size;

pub(crate) type R<T> = Result<T, Fault>;

/// The config file's directory: relative paths in the file resolve against
/// it.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn of(origin: &Path) -> Dir {
        Dir(origin.parent().unwrap_or(Path::new("")).to_path_buf())
    }

    pub(crate) fn resolve(&self, relative: &str) -> PathBuf {
        // `join` keeps absolute paths as they are.
        self.0.join(relative)
    }

    /// A non-empty string naming a directory, resolved.
    pub(crate) fn dir_path(&self, v: &Value, path: &str) -> R<PathBuf> {
        self.path(v, path, "directory")
    }

    /// A non-empty string naming a file, resolved.
    pub(crate) fn file_path(&self, v: &Value, path: &str) -> R<PathBuf> {
        self.path(v, path, "file")
    }

    fn path(&self, v: &Value, path: &str, what: &str) -> R<PathBuf> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(self.resolve(s)),
            _ => Err(Fault::invalid(
                path,
                format!("expected a {what} path, got {}", show(v)),
            )),
        }
    }
}

pub(crate) fn boolean(v: &Value, path: &str) -> R<bool> {
    v.as_bool()
        .ok_or_else(|| Fault::invalid(path, format!("expected true or false, got {}", show(v))))
}

pub(crate) fn object<'a>(v: &'a Value, path: &str, example: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Fault::invalid(
            path,
            format!("expected an object like {example}, got {}", show(v)),
        )
    })
}

/// `v` as a list; `what` describes one (`a list of routes like [...]`)
/// for the error that says what was given instead.
pub(crate) fn array<'a>(
    v: &'a Value,
    path: &str,
    what: impl std::fmt::Display,
) -> R<&'a Vec<Value>> {
    v.as_array()
        .ok_or_else(|| Fault::invalid(path, format!("expected {what}, got {}", show(v))))
}

fn check_keys(map: &Map<String, Value>, path: &str, expected: &[&'static str]) -> R<()> {
    match map.keys().find(|k| !expected.contains(&k.as_str())) {
        Some(name) => Err(Fault::UnknownKey {
            key: join(path, name),
            name: name.clone(),
            expected: expected.to_vec(),
        }),
        None => Ok(()),
    }
}

/// Reads one key's value (never `null`, which counts as absent) given the
/// key's path.
type Reader<'a, 'f> = Box<dyn FnOnce(&'a Value, &str) -> R<()> + 'f>;

/// The keys of one JSON object, each named once, next to the code that
/// reads it: the keys the object accepts are the ones given a reader. They
/// are checked before any value is read, so an unknown key (often a
/// misspelt known one) is the first error, as with a list of keys.
pub(crate) struct Fields<'a, 'f> {
    map: &'a Map<String, Value>,
    // Owned: the values read may outlive the path they were read under.
    path: String,
    readers: Vec<Field<'a, 'f>>,
}

struct Field<'a, 'f> {
    key: &'static str,
    /// The reader also gets an explicit `null` (where it means something
    /// else than absence, e.g. `"admin": null` is off).
    nullable: bool,
    read: Reader<'a, 'f>,
}

impl<'a, 'f> Fields<'a, 'f> {
    pub(crate) fn new(map: &'a Map<String, Value>, path: &str) -> Self {
        Fields {
            map,
            path: path.to_owned(),
            readers: Vec::new(),
        }
    }

    /// Accepts `key`; `read` runs with its value and path when present.
    pub(crate) fn key(
        self,
        key: &'static str,
        read: impl FnOnce(&'a Value, &str) -> R<()> + 'f,
    ) -> Self {
        self.field(key, false, Box::new(read))
    }

    /// Accepts `key`; `read` runs with its value, `null` included.
    pub(crate) fn nullable(
        self,
        key: &'static str,
        read: impl FnOnce(&'a Value, &str) -> R<()> + 'f,
    ) -> Self {
        self.field(key, true, Box::new(read))
    }

    fn field(mut self, key: &'static str, nullable: bool, read: Reader<'a, 'f>) -> Self {
        self.readers.push(Field {
            key,
            nullable,
            read,
        });
        self
    }

    /// Checks the object's keys against those given, then reads the
    /// present ones in the order given.
    pub(crate) fn read(self) -> R<()> {
        let keys: Vec<&'static str> = self.readers.iter().map(|f| f.key).collect();
        check_keys(self.map, &self.path, &keys)?;
        for field in self.readers {
            let value = match field.nullable {
                true => self.map.get(field.key),
                false => present(self.map, field.key),
            };
            if let Some(v) = value {
                (field.read)(v, &join(&self.path, field.key))?;
            }
        }
        Ok(())
    }
}

/// A value read later than its key, because what it means depends on
/// other keys: the key's value and path.
pub(crate) type Kept<'a> = Option<(&'a Value, String)>;

/// A reader that only keeps the value and path, for [`Kept`]:
/// `.key("ca", keep(&mut ca))`.
pub(crate) fn keep<'a, 'f>(slot: &'f mut Kept<'a>) -> impl FnOnce(&'a Value, &str) -> R<()> + 'f {
    move |v, p| {
        *slot = Some((v, p.to_owned()));
        Ok(())
    }
}

/// Stores a value read into its field: `.key("x", |v, p| set(x, count(v, p, 0)))`.
pub(crate) fn set<T>(field: &mut T, value: R<T>) -> R<()> {
    *field = value?;
    Ok(())
}

/// A key's value, treating `null` like absence so that `"key": null` means
/// "use the default" everywhere it is not given another meaning.
pub(crate) fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value as compact JSON, shortened so one error stays one line.
pub(crate) fn show(v: &Value) -> String {
    const MAX: usize = 60;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub(crate) fn duration(v: &Value, path: &str) -> R<Duration> {
    match v {
        Value::String(s) => parse_duration(s)
            .map_err(|why| Fault::invalid(path, format!("invalid duration {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a duration like \"30s\", \"500ms\" or \"1m\", got {}",
                show(v)
            ),
        )),
    }
}

pub(crate) fn positive_duration(v: &Value, path: &str) -> R<Duration> {
    let d = duration(v, path)?;
    if d.is_zero() {
        return Err(Fault::invalid(
            path,
            format!("must be greater than zero, got {}", show(v)),
        ));
    }
    Ok(d)
}

/// A byte count: a whole number or a string like `"16MiB"`.
pub(crate) fn size(v: &Value, path: &str) -> R<u64> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of bytes or a size like \"16MiB\", got {}",
                    show(v)
                ),
            )
        }),
        Value::String(s) => parse_size(s)
            .map_err(|why| Fault::invalid(path, format!("invalid size {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a size like \"16MiB\" or a number of bytes, got {}",
                show(v)
            ),
        )),
    }
}

/// A whole number of at least `min` that fits in a `u32`.
pub(crate) fn count(v: &Value, path: &str, min: u32) -> R<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= min)
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!("expected a whole number of at least {min}, got {}", show(v)),
            )
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The keys given readers are the object's keys: each present one is
    /// read with its path (`null` counts as absent), and an unknown key is
    /// the error, naming the keys read, before any value is read.
    #[test]
    fn fields_accept_exactly_the_keys_they_read() {
        let doc = json!({"a": 1, "b": "x", "c": null});
        let (mut a, mut b) = (0, String::new());
        Fields::new(doc.as_object().unwrap(), "s")
            .key("a", |v, p| set(&mut a, count(v, p, 0)))
            .key("b", |v, p| set(&mut b, Ok(format!("{p}={v}"))))
            .key("c", |_, p| Err(Fault::invalid(p, "null is absent")))
            .read()
            .unwrap();
        assert_eq!((a, b.as_str()), (1, "s.b=\"x\""));

        let doc = json!({"a": "not a count", "z": 1});
        let err = Fields::new(doc.as_object().unwrap(), "s")
            .key("a", |v, p| count(v, p, 0).map(drop))
            .key("b", |_, _| Ok(()))
            .read()
            .unwrap_err();
        let expected = vec!["a", "b"];
        assert_eq!(
            err,
            Fault::UnknownKey {
                key: "s.z".into(),
                name: "z".into(),
                expected
            }
        );
    }

    /// A nullable key's reader sees `null`; a kept key's value and path
    /// are there after the read, absent ones stay `None`.
    #[test]
    fn nullable_keys_see_null_and_kept_keys_wait() {
        let doc = json!({"n": null, "k": 2});
        let (mut n, mut k, mut gone): (Option<bool>, Kept, Kept) = (None, None, None);
        Fields::new(doc.as_object().unwrap(), "s")
            .nullable("n", |v, _| set(&mut n, Ok(Some(v.is_null()))))
            .key("k", keep(&mut k))
            .key("g", keep(&mut gone))
            .read()
            .unwrap();
        assert_eq!(n, Some(true));
        assert_eq!(k, Some((&json!(2), "s.k".to_owned())));
        assert_eq!(gone, None);
    }
}
