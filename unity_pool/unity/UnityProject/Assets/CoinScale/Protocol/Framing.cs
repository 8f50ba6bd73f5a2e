// The frame layer of the render protocol (docs/render-protocol.md, section 3):
//
//   u32 big-endian N | N bytes: header, a UTF-8 JSON object | blob 0 | blob 1 | ...
//
// where header["blobs"] lists the byte length of each binary part. Mirrors unity_pool/protocol.py.
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace CoinScale.Protocol
{
    /// <summary>The error types carried in error.type (docs/render-protocol.md, section 5).</summary>
    public static class ErrorTypes
    {
        /// <summary>The spec breaks the schema; path names the field.</summary>
        public const string InvalidScene = "invalid_scene";
        /// <summary>Unknown op, no scene/scenes, or a header that is not a JSON object.</summary>
        public const string BadRequest = "bad_request";
        /// <summary>A limit was exceeded, or the peer does not speak this protocol.</summary>
        public const string TooLarge = "too_large";
        /// <summary>The backend failed on a valid spec; the server keeps serving.</summary>
        public const string Internal = "internal";
    }

    /// <summary>A frame that cannot be decoded. Fatal when the stream cannot be resynchronised.</summary>
    public sealed class FrameException : Exception
    {
        public FrameException(string message, string errorType, bool fatal) : base(message)
        {
            ErrorType = errorType;
            Fatal = fatal;
        }

        /// <summary>One of ErrorTypes, for the answer to the peer.</summary>
        public string ErrorType { get; private set; }

        /// <summary>True when the connection must be closed after answering.</summary>
        public bool Fatal { get; private set; }
    }

    /// <summary>One decoded message: the JSON header and the binary parts.</summary>
    public sealed class Frame
    {
        public Frame(JsonObject header, IList<byte[]> blobs)
        {
            Header = header;
            Blobs = blobs ?? new List<byte[]>();
        }

        /// <summary>The JSON header (as received: includes "blobs").</summary>
        public JsonObject Header { get; private set; }

        /// <summary>The binary parts, in order.</summary>
        public IList<byte[]> Blobs { get; private set; }
    }

    /// <summary>Reads and writes frames on a stream.</summary>
    public static class Framing
    {
        public const int ProtocolVersion = 1;

        /// <summary>Largest header accepted: 16 MiB.</summary>
        public const long MaxHeaderBytes = 16L * 1024 * 1024;

        /// <summary>Largest total of binary parts in one frame: 1 GiB.</summary>
        public const long MaxBlobBytes = 1L * 1024 * 1024 * 1024;

        private static readonly UTF8Encoding StrictUtf8 = new UTF8Encoding(false, true);

        /// <summary>The bytes of one frame; sets header["blobs"] from the blobs (on a copy).</summary>
        public static byte[] Encode(JsonObject header, IList<byte[]> blobs)
        {
            blobs = blobs ?? new List<byte[]>();
            var full = new JsonObject();
            foreach (var pair in header) full[pair.Key] = pair.Value;
            var sizes = new List<object>();
            long total = 0;
            foreach (var blob in blobs)
            {
                sizes.Add((long)blob.Length);
                total += blob.Length;
            }
            full["blobs"] = sizes;
            var head = StrictUtf8.GetBytes(Json.Serialize(full));
            if (head.Length > MaxHeaderBytes)
                throw new FrameException(
                    "header is " + head.Length + " bytes; expected at most " + MaxHeaderBytes +
                    ". Fix: send fewer scenes per request.", ErrorTypes.TooLarge, false);
            var output = new byte[4 + head.Length + total];
            output[0] = (byte)(head.Length >> 24);
            output[1] = (byte)(head.Length >> 16);
            output[2] = (byte)(head.Length >> 8);
            output[3] = (byte)head.Length;
            Buffer.BlockCopy(head, 0, output, 4, head.Length);
            long offset = 4 + head.Length;
            foreach (var blob in blobs)
            {
                Buffer.BlockCopy(blob, 0, output, (int)offset, blob.Length);
                offset += blob.Length;
            }
            return output;
        }

        /// <summary>Send one frame.</summary>
        public static void Write(Stream stream, JsonObject header, IList<byte[]> blobs)
        {
            var bytes = Encode(header, blobs);
            stream.Write(bytes, 0, bytes.Length);
            stream.Flush();
        }

        /// <summary>
        /// The next frame, or null when the peer closed the connection between frames. Throws
        /// FrameException for a malformed frame and EndOfStreamException for an EOF inside one.
        /// </summary>
        public static Frame Read(Stream stream)
        {
            var prefix = ReadExactly(stream, 4, true);
            if (prefix == null) return null;
            long n = ((long)prefix[0] << 24) | ((long)prefix[1] << 16) | ((long)prefix[2] << 8) | prefix[3];
            if (n > MaxHeaderBytes)
                throw new FrameException(
                    "header length " + n + " exceeds " + MaxHeaderBytes + " bytes (or the peer does not speak " +
                    "this protocol: a frame starts with a 4-byte big-endian header length)", ErrorTypes.TooLarge, true);
            var raw = ReadExactly(stream, (int)n, false);
            object parsed;
            try
            {
                parsed = Json.Parse(StrictUtf8.GetString(raw));
            }
            catch (Exception err)
            {
                if (!(err is JsonException) && !(err is ArgumentException)) throw;
                throw new FrameException("header is not UTF-8 JSON: " + err.Message, ErrorTypes.BadRequest, true);
            }
            var header = parsed as JsonObject;
            if (header == null)
                throw new FrameException(
                    "header must be a JSON object; got " + TypeName(parsed), ErrorTypes.BadRequest, true);
            var sizes = new List<long>();
            var declared = header.Get("blobs");
            if (declared != null)
            {
                var list = declared as List<object>;
                if (list == null) throw BadBlobs(declared);
                foreach (var item in list)
                {
                    if (!(item is long) || (long)item < 0) throw BadBlobs(declared);
                    sizes.Add((long)item);
                }
            }
            long total = 0;
            foreach (var size in sizes) total += size;
            if (total > MaxBlobBytes)
                throw new FrameException(
                    "binary parts total " + total + " bytes; expected at most " + MaxBlobBytes,
                    ErrorTypes.TooLarge, true);
            var blobs = new List<byte[]>();
            foreach (var size in sizes) blobs.Add(ReadExactly(stream, (int)size, false));
            return new Frame(header, blobs);
        }

        /// <summary>The JSON type name of a parsed value, as Python would name it (for messages).</summary>
        public static string TypeName(object value)
        {
            if (value == null) return "NoneType";
            if (value is JsonObject) return "dict";
            if (value is List<object>) return "list";
            if (value is string) return "str";
            if (value is bool) return "bool";
            if (value is long) return "int";
            if (value is double) return "float";
            return value.GetType().Name;
        }

        private static FrameException BadBlobs(object declared)
        {
            return new FrameException(
                "header.blobs must be a list of byte lengths; got " + Json.Describe(declared), ErrorTypes.BadRequest, true);
        }

        private static byte[] ReadExactly(Stream stream, int n, bool atBoundary)
        {
            var buffer = new byte[n];
            var got = 0;
            while (got < n)
            {
                var read = stream.Read(buffer, got, Math.Min(n - got, 4 * 1024 * 1024));
                if (read <= 0)
                {
                    if (atBoundary && got == 0) return null;
                    throw new EndOfStreamException("peer closed the connection " + got + "/" + n + " bytes into a frame");
                }
                got += read;
            }
            return buffer;
        }
    }
}
