#!/usr/bin/env python3
"""Breaks the C# lines of src/ that are longer than the house limit (120), changing nothing else.

C# treats a line break as white space, so a break outside a literal or a comment never changes the program. Breaks
go, in order of preference, after a comma or before an operator (=>, ??, &&, ||, ?, :, +, a chained .Method) at the
shallowest bracket depth; else inside a string literal, as two literals joined by + (an interpolated literal stays
interpolated, and no break falls inside an interpolation hole); comments are wrapped at a space. The continuation is
indented four spaces past the line it came from. A line it cannot break is reported and left alone.

Usage: python3 tools/wrap_long_lines.py [--limit 120] FILE...   (rewrites the files; prints what it could not wrap)
"""
import re
import sys

LIMIT = 120


def scan(line):
    """Yields (index, char, state) where state is 'code', 'string' (with hole depth 0), 'hole', 'char', 'comment'."""
    i, n = 0, len(line)
    stack = []  # string contexts: [interpolated, verbatim, hole_depth]
    while i < n:
        ch = line[i]
        if stack:
            interp, verbatim, _ = stack[-1]
            top = stack[-1]
            if top[2] > 0:  # inside a hole: code-like, strings may nest
                if ch == '"' or (ch in '$@' and i + 1 < n and line[i + 1] in '"$@'):
                    j = i
                    prefix = ''
                    while j < n and line[j] in '$@':
                        prefix += line[j]
                        j += 1
                    if j < n and line[j] == '"':
                        yield i, ch, 'hole', len(stack)
                        for k in range(i + 1, j + 1):
                            yield k, line[k], 'hole', len(stack)
                        stack.append(['$' in prefix, '@' in prefix, 0])
                        i = j + 1
                        continue
                if ch == '{':
                    top[2] += 1
                elif ch == '}':
                    top[2] -= 1
                yield i, ch, 'hole', len(stack)
                i += 1
                continue
            if not verbatim and ch == '\\':
                yield i, ch, 'string', len(stack)
                if i + 1 < n:
                    yield i + 1, line[i + 1], 'string', len(stack)
                i += 2
                continue
            if interp and ch == '{':
                if i + 1 < n and line[i + 1] == '{':
                    yield i, ch, 'string', len(stack)
                    yield i + 1, '{', 'string', len(stack)
                    i += 2
                    continue
                top[2] = 1
                yield i, ch, 'hole', len(stack)
                i += 1
                continue
            if ch == '"':
                if verbatim and i + 1 < n and line[i + 1] == '"':
                    yield i, ch, 'string', len(stack)
                    yield i + 1, ch, 'string', len(stack)
                    i += 2
                    continue
                stack.pop()
                yield i, ch, 'string-end', len(stack)
                i += 1
                continue
            yield i, ch, 'string', len(stack)
            i += 1
            continue
        if line.startswith('//', i):
            for k in range(i, n):
                yield k, line[k], 'comment', len(stack)
            return
        if ch == "'":
            j = i + 1
            while j < n and line[j] != "'":
                j += 2 if line[j] == '\\' else 1
            for k in range(i, min(j + 1, n)):
                yield k, line[k], 'char', len(stack)
            i = j + 1
            continue
        if ch == '"' or (ch in '$@' and re.match(r'[$@]+"', line[i:])):
            m = re.match(r'([$@]*)"', line[i:])
            prefix = m.group(1)
            if line.startswith('"""', i + len(prefix)):
                raise ValueError('raw string literal')
            for k in range(i, i + len(prefix) + 1):
                yield k, line[k], 'string-start', len(stack)
            stack.append(['$' in prefix, '@' in prefix, 0])
            i += len(prefix) + 1
            continue
        yield i, ch, 'code', len(stack)
        i += 1


OPERATORS = [' => ', ' ?? ', ' && ', ' || ', ' ? ', ' : ', ' + ', ' - ', ' * ']


def candidates(line):
    """(position, depth, rank): a break before position; lower rank is better."""
    states = list(scan(line))
    result = []
    depth = 0
    state_at = {i: s for i, _, s, _ in states}
    for i, ch, s, _ in states:
        if s != 'code':
            continue
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == ',' and i + 1 < len(line) and line[i + 1] == ' ':
            result.append((i + 2, depth, 0))
        for op in OPERATORS:
            if line.startswith(op, i) and all(state_at.get(k) == 'code' for k in range(i, i + len(op))):
                result.append((i + 1, depth, 1))
        if ch == '.' and i > 0 and line[i - 1] == ')' and re.match(r'\.[A-Z_a-z]', line[i:]):
            result.append((i, depth, 2))
        if line.startswith(' = ', i):
            result.append((i + 3, depth, 3))
        # if (...) throw/return: the statement on its own line.
        if ch == ')' and re.match(r'\) (throw|return|continue|break)\b', line[i:]):
            result.append((i + 2, depth, 0))
    return result, states


def string_split(line, states, limit):
    """A position inside a string literal (not in a hole) to split it at, with the literal's prefix."""
    best = None
    start_prefix = None
    literal_start = None
    for i, ch, s, nesting in states:
        if s == 'string-start' and ch == '"':
            j = i
            while j > 0 and line[j - 1] in '$@':
                j -= 1
            start_prefix = line[j:i]
            literal_start = i
        if s == 'string' and nesting == 1 and ch == ' ' and i <= limit - 3 and literal_start is not None and i - literal_start > 10:
            if '@' not in (start_prefix or ''):
                best = (i + 1, start_prefix)
    return best


def wrap(line, limit=LIMIT):
    if len(line) <= limit:
        return [line]
    indent = len(line) - len(line.lstrip())
    stripped = line.strip()
    if stripped.startswith('#'):
        return None
    if stripped.startswith('//'):
        prefix = re.match(r'\s*(///?\s?)', line).group(0)
        cut = line.rfind(' ', len(prefix) + 1, limit + 1)
        if cut <= len(prefix):
            return None
        return [line[:cut].rstrip()] + wrap(prefix + line[cut + 1:].lstrip(), limit)
    try:
        cands, states = candidates(line)
    except ValueError:
        return None
    # A trailing comment goes on its own line above the code.
    comment = next((i for i, _, s, _ in states if s == 'comment'), None)
    if comment is not None:
        code, text = line[:comment].rstrip(), line[comment:]
        above = wrap(' ' * indent + text, limit)
        below = wrap(code, limit)
        return None if above is None or below is None else above + below
    # A continuation that starts with an operator is already indented: its own continuations line up with it.
    cont = ' ' * (indent if re.match(r'(\+|-|\?\?|\?|:|&&|\|\||\.|=>) ', stripped + ' ') else indent + 4)
    fitting = [c for c in cands if c[0] <= limit and len(line[:c[0]].rstrip()) <= limit and c[0] > indent + 8]
    if fitting:
        # Late breaks at shallow depth read best: each bracket level costs 40 columns, a weaker break point 10.
        pos = max(fitting, key=lambda c: c[0] - 40 * c[1] - 10 * c[2])[0]
        left, right = line[:pos].rstrip(), cont + line[pos:].lstrip()
        if len(right) < len(line):
            rest = wrap(right, limit)
            return None if rest is None else [left] + rest
    split = string_split(line, states, limit)
    if split is None:
        return None
    pos, prefix = split
    left = line[:pos] + '"'
    right = cont + '+ ' + (prefix or '') + '"' + line[pos:]
    rest = wrap(right, limit)
    return None if rest is None else [left] + rest


def main(argv):
    limit = LIMIT
    if argv[:1] == ['--limit']:
        limit, argv = int(argv[1]), argv[2:]
    failed = 0
    for path in argv:
        lines = open(path, encoding='utf-8').read().split('\n')
        out = []
        for number, line in enumerate(lines, 1):
            wrapped = wrap(line, limit)
            if wrapped is None:
                failed += 1
                print(f'{path}:{number}: cannot wrap ({len(line)} characters)')
                out.append(line)
            else:
                out.extend(wrapped)
        open(path, 'w', encoding='utf-8').write('\n'.join(out))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
