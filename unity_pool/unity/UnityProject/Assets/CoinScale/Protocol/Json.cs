// A small JSON reader and writer (RFC 8259) for the render protocol, with no dependencies beyond
// the base class library, so it compiles in a Unity player and under Mono's mcs alike.
//
// Values map to: object -> JsonObject (keeps insertion order), array -> List<object>,
// string -> string, true/false -> bool, null -> null, number -> long when the literal is an
// integer that fits (no fraction, no exponent), otherwise double. NaN and Infinity are rejected
// both ways, as the protocol requires. Output is ASCII (other characters as \uXXXX escapes).
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace CoinScale.Protocol
{
    /// <summary>Malformed JSON text, or a value that JSON cannot carry.</summary>
    public sealed class JsonException : Exception
    {
        public JsonException(string message) : base(message) { }
    }

    /// <summary>A JSON object whose keys keep the order they were added in.</summary>
    public sealed class JsonObject : IEnumerable<KeyValuePair<string, object>>
    {
        private readonly List<string> order = new List<string>();
        private readonly Dictionary<string, object> values = new Dictionary<string, object>();

        public int Count { get { return order.Count; } }

        public IEnumerable<string> Keys { get { return order; } }

        /// <summary>Set a key (a repeated key keeps its first position and takes the new value).</summary>
        public object this[string key]
        {
            get { return values[key]; }
            set
            {
                if (!values.ContainsKey(key)) order.Add(key);
                values[key] = value;
            }
        }

        public void Add(string key, object value) { this[key] = value; }

        public bool ContainsKey(string key) { return values.ContainsKey(key); }

        public bool TryGetValue(string key, out object value) { return values.TryGetValue(key, out value); }

        /// <summary>The value of a key, or null when the key is absent.</summary>
        public object Get(string key)
        {
            object value;
            return values.TryGetValue(key, out value) ? value : null;
        }

        public IEnumerator<KeyValuePair<string, object>> GetEnumerator()
        {
            foreach (var key in order) yield return new KeyValuePair<string, object>(key, values[key]);
        }

        IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
    }

    /// <summary>JSON text to values and back.</summary>
    public static class Json
    {
        private const int MaxDepth = 256;

        /// <summary>Parse one JSON value; the whole text must be that value (whitespace aside).</summary>
        public static object Parse(string text)
        {
            var reader = new Reader(text);
            reader.SkipWhitespace();
            var value = reader.ReadValue(0);
            reader.SkipWhitespace();
            if (!reader.AtEnd) throw reader.Error("unexpected text after the JSON value");
            return value;
        }

        /// <summary>Compact JSON text of a value (JsonObject, IDictionary, IList, string, number, bool, null).</summary>
        public static string Serialize(object value)
        {
            var sb = new StringBuilder();
            Write(sb, value, 0);
            return sb.ToString();
        }

        /// <summary>A short, Python-repr-like rendering of a value for error messages: 'text', 3, 0.5, True, None.</summary>
        public static string Describe(object value)
        {
            if (value == null) return "None";
            if (value is bool) return (bool)value ? "True" : "False";
            var s = value as string;
            if (s != null) return "'" + s.Replace("\\", "\\\\").Replace("'", "\\'") + "'";
            if (value is double) return FormatDouble((double)value);
            if (value is long || value is int) return Convert.ToString(value, CultureInfo.InvariantCulture);
            var text = Serialize(value);
            return text.Length > 80 ? text.Substring(0, 77) + "..." : text;
        }

        /// <summary>A double as JSON: shortest round-trip form, always with a '.' or exponent.</summary>
        public static string FormatDouble(double d)
        {
            if (double.IsNaN(d) || double.IsInfinity(d))
                throw new JsonException("JSON cannot carry NaN or Infinity; got " + d.ToString(CultureInfo.InvariantCulture));
            var text = d.ToString("R", CultureInfo.InvariantCulture);
            if (text.IndexOf('.') < 0 && text.IndexOf('E') < 0 && text.IndexOf('e') < 0) text += ".0";
            return text;
        }

        private static void Write(StringBuilder sb, object value, int depth)
        {
            if (depth > MaxDepth) throw new JsonException("value nested deeper than " + MaxDepth);
            if (value == null) { sb.Append("null"); return; }
            if (value is bool) { sb.Append((bool)value ? "true" : "false"); return; }
            var s = value as string;
            if (s != null) { WriteString(sb, s); return; }
            if (value is double) { sb.Append(FormatDouble((double)value)); return; }
            if (value is float) { sb.Append(FormatDouble((float)value)); return; }
            if (value is long || value is int || value is short || value is byte || value is uint || value is ulong)
            {
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                return;
            }
            var obj = value as JsonObject;
            if (obj != null)
            {
                sb.Append('{');
                var first = true;
                foreach (var pair in obj)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, pair.Key);
                    sb.Append(':');
                    Write(sb, pair.Value, depth + 1);
                }
                sb.Append('}');
                return;
            }
            var dict = value as IDictionary;
            if (dict != null)
            {
                sb.Append('{');
                var first = true;
                foreach (DictionaryEntry entry in dict)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, Convert.ToString(entry.Key, CultureInfo.InvariantCulture));
                    sb.Append(':');
                    Write(sb, entry.Value, depth + 1);
                }
                sb.Append('}');
                return;
            }
            var list = value as IEnumerable;
            if (list != null)
            {
                sb.Append('[');
                var first = true;
                foreach (var item in list)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    Write(sb, item, depth + 1);
                }
                sb.Append(']');
                return;
            }
            throw new JsonException("cannot write a " + value.GetType().Name + " as JSON");
        }

        private static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (var c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        // ASCII-only output, like Python's json.dumps: a lone surrogate
                        // cannot break the UTF-8 encoding of the header
                        if (c < 0x20 || c > 0x7e) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        private sealed class Reader
        {
            private readonly string text;
            private int pos;

            public Reader(string text) { this.text = text; }

            private static bool IsDigit(char c) { return c >= '0' && c <= '9'; }

            public bool AtEnd { get { return pos >= text.Length; } }

            public JsonException Error(string what)
            {
                return new JsonException(what + " at character " + pos);
            }

            public void SkipWhitespace()
            {
                while (pos < text.Length)
                {
                    var c = text[pos];
                    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++;
                    else break;
                }
            }

            public object ReadValue(int depth)
            {
                if (depth > MaxDepth) throw Error("JSON nested deeper than " + MaxDepth);
                if (AtEnd) throw Error("unexpected end of JSON");
                var c = text[pos];
                switch (c)
                {
                    case '{': return ReadObject(depth);
                    case '[': return ReadArray(depth);
                    case '"': return ReadString();
                    case 't': Expect("true"); return true;
                    case 'f': Expect("false"); return false;
                    case 'n': Expect("null"); return null;
                    default:
                        if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber();
                        throw Error("unexpected character '" + c + "'");
                }
            }

            private void Expect(string word)
            {
                if (string.CompareOrdinal(text, pos, word, 0, word.Length) != 0) throw Error("expected '" + word + "'");
                pos += word.Length;
            }

            private JsonObject ReadObject(int depth)
            {
                var obj = new JsonObject();
                pos++;
                SkipWhitespace();
                if (!AtEnd && text[pos] == '}') { pos++; return obj; }
                while (true)
                {
                    SkipWhitespace();
                    if (AtEnd || text[pos] != '"') throw Error("expected a string key");
                    var key = ReadString();
                    SkipWhitespace();
                    if (AtEnd || text[pos] != ':') throw Error("expected ':'");
                    pos++;
                    SkipWhitespace();
                    obj[key] = ReadValue(depth + 1);
                    SkipWhitespace();
                    if (AtEnd) throw Error("unterminated object");
                    if (text[pos] == ',') { pos++; continue; }
                    if (text[pos] == '}') { pos++; return obj; }
                    throw Error("expected ',' or '}'");
                }
            }

            private List<object> ReadArray(int depth)
            {
                var list = new List<object>();
                pos++;
                SkipWhitespace();
                if (!AtEnd && text[pos] == ']') { pos++; return list; }
                while (true)
                {
                    SkipWhitespace();
                    list.Add(ReadValue(depth + 1));
                    SkipWhitespace();
                    if (AtEnd) throw Error("unterminated array");
                    if (text[pos] == ',') { pos++; continue; }
                    if (text[pos] == ']') { pos++; return list; }
                    throw Error("expected ',' or ']'");
                }
            }

            private string ReadString()
            {
                pos++; // opening quote
                var sb = new StringBuilder();
                while (true)
                {
                    if (AtEnd) throw Error("unterminated string");
                    var c = text[pos++];
                    if (c == '"') return sb.ToString();
                    if (c < 0x20) throw Error("control character in a string");
                    if (c != '\\') { sb.Append(c); continue; }
                    if (AtEnd) throw Error("unterminated escape");
                    var e = text[pos++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            if (pos + 4 > text.Length) throw Error("short \\u escape");
                            int code;
                            if (!int.TryParse(text.Substring(pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out code))
                                throw Error("bad \\u escape");
                            sb.Append((char)code);
                            pos += 4;
                            break;
                        default: throw Error("bad escape '\\" + e + "'");
                    }
                }
            }

            private object ReadNumber()
            {
                var start = pos;
                if (text[pos] == '-') pos++;
                if (AtEnd) throw Error("bad number");
                if (text[pos] == '0') pos++;
                else if (text[pos] >= '1' && text[pos] <= '9') { while (!AtEnd && IsDigit(text[pos])) pos++; }
                else throw Error("bad number");
                var integral = true;
                if (!AtEnd && text[pos] == '.')
                {
                    integral = false;
                    pos++;
                    if (AtEnd || !IsDigit(text[pos])) throw Error("bad number: digits expected after '.'");
                    while (!AtEnd && IsDigit(text[pos])) pos++;
                }
                if (!AtEnd && (text[pos] == 'e' || text[pos] == 'E'))
                {
                    integral = false;
                    pos++;
                    if (!AtEnd && (text[pos] == '+' || text[pos] == '-')) pos++;
                    if (AtEnd || !IsDigit(text[pos])) throw Error("bad number: digits expected in the exponent");
                    while (!AtEnd && IsDigit(text[pos])) pos++;
                }
                var literal = text.Substring(start, pos - start);
                if (integral)
                {
                    long l;
                    if (long.TryParse(literal, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out l)) return l;
                }
                double d;
                if (!double.TryParse(literal, NumberStyles.Float, CultureInfo.InvariantCulture, out d) || double.IsInfinity(d))
                    throw Error("number out of range: " + literal);
                return d;
            }
        }
    }
}
