package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends rec as one line of JSON, as encoding/json writes it
// (the same keys, order and escapes), without reflection: it is on the path
// of every open in audit mode.
func appendRecord(b []byte, rec *Record) []byte {
	b = append(b, `{"time":`...)
	b = append(b, '"')
	b = rec.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "op", rec.Op, false)
	b = appendField(b, "ref", rec.Ref, true)
	if len(rec.Refs) > 0 {
		b = append(b, `,"refs":[`...)
		for i, r := range rec.Refs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, r)
		}
		b = append(b, ']')
	}
	b = appendField(b, "path", rec.Path, true)
	b = appendField(b, "result", rec.Result, false)
	b = appendField(b, "rule", rec.Rule, true)
	b = appendField(b, "reason", rec.Reason, true)
	b = appendUint(b, "uid", uint64(rec.UID), false)
	b = appendUint(b, "gid", uint64(rec.GID), false)
	b = appendUint(b, "pid", uint64(rec.PID), false)
	b = appendField(b, "exe", rec.Exe, true)
	b = appendField(b, "exe_dev", rec.ExeDev, true)
	b = appendUint(b, "exe_ino", rec.ExeIno, true)
	if rec.ExeNotAtPath {
		b = append(b, `,"exe_not_at_path":true`...)
	}
	b = appendUint(b, "mnt_ns", rec.MntNS, true)
	if rec.OtherMntNS {
		b = append(b, `,"other_mnt_ns":true`...)
	}
	b = appendField(b, "cgroup", rec.Cgroup, true)
	if rec.Delegated {
		b = append(b, `,"cgroup_delegated":true`...)
	}
	b = appendField(b, "container", rec.Container, true)
	return append(b, '}')
}

func appendField(b []byte, key, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func appendUint(b []byte, key string, v uint64, omitEmpty bool) []byte {
	if omitEmpty && v == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendUint(b, v, 10)
}

const hex = "0123456789abcdef"

// appendString appends s quoted as encoding/json quotes it: control
// characters, '<', '>', '&', U+2028 and U+2029 as \u escapes, invalid
// UTF-8 as U+FFFD (Write has escaped such bytes before).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
