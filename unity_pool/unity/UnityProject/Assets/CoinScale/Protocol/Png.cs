// A minimal PNG encoder (8-bit RGB, no interlace) on the base class library: zlib framing around
// System.IO.Compression.DeflateStream, Adler-32 and CRC-32 by hand. The Unity player encodes with
// Texture2D.EncodeToPNG; this one serves the console stand-in and tests.
using System;
using System.IO;
using System.IO.Compression;
using System.Text;

namespace CoinScale.Protocol
{
    public static class Png
    {
        private static readonly uint[] CrcTable = BuildCrcTable();

        /// <summary>PNG bytes of row-major RGB pixels (width * height * 3 bytes, top row first).</summary>
        public static byte[] EncodeRgb(byte[] rgb, int width, int height)
        {
            if (width <= 0 || height <= 0) throw new ArgumentException("image size must be positive; got " + width + "x" + height);
            if (rgb.Length != (long)width * height * 3)
                throw new ArgumentException("expected " + (long)width * height * 3 + " bytes of RGB; got " + rgb.Length);
            var output = new MemoryStream();
            output.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, 0, 8);
            var ihdr = new byte[13];
            WriteBigEndian(ihdr, 0, (uint)width);
            WriteBigEndian(ihdr, 4, (uint)height);
            ihdr[8] = 8;  // bit depth
            ihdr[9] = 2;  // colour type: RGB
            // compression 0, filter 0, interlace 0
            WriteChunk(output, "IHDR", ihdr);
            WriteChunk(output, "IDAT", Zlib(Scanlines(rgb, width, height)));
            WriteChunk(output, "IEND", new byte[0]);
            return output.ToArray();
        }

        /// <summary>A width x height PNG filled with one colour.</summary>
        public static byte[] Solid(int width, int height, byte r, byte g, byte b)
        {
            var rgb = new byte[width * height * 3];
            for (var i = 0; i < rgb.Length; i += 3)
            {
                rgb[i] = r;
                rgb[i + 1] = g;
                rgb[i + 2] = b;
            }
            return EncodeRgb(rgb, width, height);
        }

        /// <summary>CRC-32 (ISO 3309, as PNG and zlib use) of data[offset, offset + count).</summary>
        public static uint Crc32(byte[] data, int offset, int count, uint crc = 0)
        {
            crc ^= 0xFFFFFFFFu;
            for (var i = offset; i < offset + count; i++) crc = CrcTable[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
            return crc ^ 0xFFFFFFFFu;
        }

        private static byte[] Scanlines(byte[] rgb, int width, int height)
        {
            var stride = width * 3;
            var raw = new byte[(stride + 1) * height];
            for (var y = 0; y < height; y++)
            {
                raw[y * (stride + 1)] = 0; // filter type None
                Buffer.BlockCopy(rgb, y * stride, raw, y * (stride + 1) + 1, stride);
            }
            return raw;
        }

        private static byte[] Zlib(byte[] data)
        {
            var output = new MemoryStream();
            output.WriteByte(0x78); // deflate, 32 KiB window
            output.WriteByte(0x01); // no preset dictionary, fastest; (0x78 << 8 | 0x01) % 31 == 0
            using (var deflate = new DeflateStream(output, CompressionMode.Compress, true))
                deflate.Write(data, 0, data.Length);
            uint a = 1, b = 0;
            foreach (var x in data)
            {
                a = (a + x) % 65521;
                b = (b + a) % 65521;
            }
            var adler = new byte[4];
            WriteBigEndian(adler, 0, (b << 16) | a);
            output.Write(adler, 0, 4);
            return output.ToArray();
        }

        private static void WriteChunk(Stream output, string type, byte[] data)
        {
            var length = new byte[4];
            WriteBigEndian(length, 0, (uint)data.Length);
            output.Write(length, 0, 4);
            var body = new byte[4 + data.Length];
            Encoding.ASCII.GetBytes(type, 0, 4, body, 0);
            Buffer.BlockCopy(data, 0, body, 4, data.Length);
            output.Write(body, 0, body.Length);
            var crc = new byte[4];
            WriteBigEndian(crc, 0, Crc32(body, 0, body.Length));
            output.Write(crc, 0, 4);
        }

        private static void WriteBigEndian(byte[] buffer, int offset, uint value)
        {
            buffer[offset] = (byte)(value >> 24);
            buffer[offset + 1] = (byte)(value >> 16);
            buffer[offset + 2] = (byte)(value >> 8);
            buffer[offset + 3] = (byte)value;
        }

        private static uint[] BuildCrcTable()
        {
            var table = new uint[256];
            for (uint n = 0; n < 256; n++)
            {
                var c = n;
                for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                table[n] = c;
            }
            return table;
        }
    }
}
