#!/usr/bin/env python3
"""Lists methods in src/ longer than 60 lines (signature to closing brace), the house rule.

    python3 tools/long_methods.py      # prints nothing when every method fits
"""
import os, re, subprocess, sys
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "src/*.cs"], cwd=root, capture_output=True, text=True).stdout.split()
sig = re.compile(r'^\s*(public|private|internal|protected|static|override|async|sealed|virtual)[^;=]*\)\s*(where[^{]*)?$'
                 r'|^\s*(public|private|internal|protected)[^;=(]*\b\w+\s*\([^;]*\)\s*(:\s*(base|this)\(.*\))?\s*$')
found = 0
for f in files:
    lines = open(os.path.join(root, f)).read().split('\n')
    for i, l in enumerate(lines):
        if not (sig.match(l) and i + 1 < len(lines) and lines[i + 1].strip() == '{') or re.search(r'\b(record|class|struct)\b', l):
            continue
        depth, j = 0, i + 1
        while j < len(lines):
            t = re.sub(r"'(\\.|[^'\\])'", '', lines[j])          # char literals
            t = re.sub(r'"(\\.|[^"\\])*"', '""', t)               # string literals
            depth += t.count('{') - t.count('}')
            if depth == 0: break
            j += 1
        if j - i + 1 > 60:
            found += 1
            print(f"{j - i + 1} {f}:{i + 1} {l.strip()[:90]}")
sys.exit(1 if found else 0)
