#!/usr/bin/env python3
"""Decode Birkhoff BPE tokens with DIR/tokenizer.json (written by prepare_data). Stdlib only.

  tokenizer_decode.py TOKENIZER_JSON 72 101 108          # ids as arguments
  echo "72 101" | tokenizer_decode.py TOKENIZER_JSON      # ids on stdin
  tokenizer_decode.py TOKENIZER_JSON --shard DIR/val.bin [--offset N] [--count N]
  tokenizer_decode.py TOKENIZER_JSON --pretokenize FILE   # chunk lengths (checks the regex)

Decoding: token i < 256 is byte i; token 256 + r is bytes(merges[r][0]) + bytes(merges[r][1]).
The decoded bytes go to stdout unchanged (exact round trip); see docs/data.md.
As a module: tok = load("tokenizer.json"); text = decode(tok, ids).
"""
import argparse
import json
import re
import struct
import sys


def load(path):
    with open(path, "r", encoding="utf-8") as f:
        t = json.load(f)
    if t.get("format") != "birkhoff-bpe" or t.get("version") != 1:
        sys.exit(f"{path}: not a birkhoff-bpe version 1 tokenizer")
    table = [bytes([i]) for i in range(t["num_byte_tokens"])]
    for left, right in t["merges"]:
        table.append(table[left] + table[right])
    if len(table) != t["vocab_size"]:
        sys.exit(f"{path}: vocab_size {t['vocab_size']} != 256 + {len(t['merges'])} merges")
    t["table"] = table
    return t


def decode_bytes(tok, ids):
    return b"".join(tok["table"][i] for i in ids)


def decode(tok, ids):
    return decode_bytes(tok, ids).decode("utf-8", errors="replace")


def pretokenize(tok, data):
    """The pre-tokenizer as documented: regex matches, each cut into max_chunk_bytes pieces."""
    pre = tok["pre_tokenizer"]
    n = pre["max_chunk_bytes"]
    out = []
    for m in re.finditer(pre["regex"].encode("latin-1"), data):
        s = m.group(0)
        out.extend(s[i:i + n] for i in range(0, len(s), n))
    return out


def read_shard(path, offset=0, count=None):
    """Tokens of a shard: 64-byte header (magic, u32 version, u32 vocab, u64 n, u32 dtype)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:8] != b"BKTOKENS":
            sys.exit(f"{path}: not a Birkhoff token shard (bad magic or truncated)")
        version, vocab, n, dtype = struct.unpack_from("<IIQI", header, 8)
        if version != 1 or dtype != 1:
            sys.exit(f"{path}: unsupported version {version} / dtype {dtype}")
        count = n - offset if count is None else min(count, n - offset)
        f.seek(64 + 4 * offset)
        data = f.read(4 * max(count, 0))
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("ids", nargs="*", type=int)
    ap.add_argument("--shard")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--count", type=int)
    ap.add_argument("--pretokenize", metavar="FILE")
    a = ap.parse_args()
    tok = load(a.tokenizer)
    if a.pretokenize:
        with open(a.pretokenize, "rb") as f:
            for c in pretokenize(tok, f.read()):
                print(len(c))
        return
    if a.shard:
        ids = read_shard(a.shard, a.offset, a.count)
    elif a.ids:
        ids = a.ids
    else:
        ids = [int(x) for x in sys.stdin.read().split()]
    sys.stdout.buffer.write(decode_bytes(tok, ids))


if __name__ == "__main__":
    main()
