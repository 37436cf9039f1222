#!/usr/bin/env python3
"""Rewrites one world's generated bindings (sdk/bindings.sh runs it) so that
the answer of each named export is freed when the next call of that export
starts, instead of by the export's post-return function.

Why: the proxy calls a plugin's post-return as a call of its own, through
wasmtime's whole entry and exit (the trap handler and the stack limit set
up and torn down), right after each call whose answer holds
a string or a list: a router's `route`, a filter's `on-request` and
`on-response`. Without a `cabi_post_<name>` export the component declares
no post-return for the function and the proxy makes one call, not two.
The answer's memory is the plugin's own: holding one answer per export
until the next call costs a few bytes, and what frees it is the
generated `__post_return_<name>` itself, run on a copy of the answer's
return area taken when the call ended (the area is shared by every
export of the world, so it is not read again later).

usage: defer_post_return.py FILE EXPORT...
"""

import re
import sys


def defer(src: str, name: str) -> str:
    f = name.replace("-", "_")
    post = re.compile(
        r'    #\[unsafe\(export_name = "cabi_post_%s"\)\]\n'
        r"    unsafe extern \"C\" fn _post_return_%s\(arg0: \*mut u8,\) \{\n"
        r"      unsafe \{ \$\(\$path_to_types\)\*::__post_return_%s::<\$ty>\(arg0\) \}\n"
        r"    \}\n" % (re.escape(name), f, f)
    )
    src, n = post.subn("", src)
    if n != 1:
        sys.exit(f"defer_post_return: no single cabi_post_{name} export ({n} found)")
    src, n = re.subn(
        r"::_export_%s_cabi::<\$ty>" % f, "::_export_%s_deferred::<$ty>" % f, src
    )
    if n != 1:
        sys.exit(f"defer_post_return: no single call of _export_{f}_cabi ({n} found)")
    m = re.search(
        r"pub unsafe fn _export_%s_cabi<T_: Guest>\(([^)]*)\) -> \*mut u8 \{" % f, src
    )
    if not m:
        sys.exit(f"defer_post_return: no _export_{f}_cabi returning a pointer")
    params = " ".join(m.group(1).split())
    args = ", ".join(p.split(":")[0].strip() for p in params.split(",") if p.strip())
    upper = f.upper()
    return src + f"""
/// The answer of the last `{name}` call, freed when the next one starts
/// (sdk/defer_post_return.py says why).
static mut _PENDING_{upper}: ::core::option::Option<_RetArea> = None;
#[doc(hidden)]
pub unsafe fn _export_{f}_deferred<T_: Guest>({params}) -> *mut u8 {{
    unsafe {{
        if let Some(mut area) = (*&raw mut _PENDING_{upper}).take() {{
            __post_return_{f}::<T_>((&raw mut area.0).cast());
        }}
        let ret = _export_{f}_cabi::<T_>({args});
        _PENDING_{upper} = Some(::core::ptr::read(ret.cast::<_RetArea>()));
        ret
    }}
}}
"""


def main() -> None:
    path, names = sys.argv[1], sys.argv[2:]
    with open(path) as f:
        src = f.read()
    for name in names:
        src = defer(src, name)
    with open(path, "w") as f:
        f.write(src)


if __name__ == "__main__":
    main()
