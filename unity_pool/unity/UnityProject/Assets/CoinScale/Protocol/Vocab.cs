// The vocabularies of the scene spec and of its ground-truth attributes: a copy of
// unity_pool/vocab.py (tests/test_unity_csharp.py checks that the two agree).
using System.Collections.Generic;

namespace CoinScale.Protocol
{
    /// <summary>Names, colours, numeric ranges and attribute bins of scene spec version 1.</summary>
    public static class Vocab
    {
        public const int SpecVersion = 1;

        public static readonly string[] Shapes =
        {
            "circle", "square", "triangle", "star", "hexagon", "cross", "heart", "ring", "crescent", "arrow",
        };

        public static readonly string[] Colors =
        {
            "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white", "black",
        };

        /// <summary>sRGB 0-255 of each colour, in the order of Colors.</summary>
        public static readonly byte[][] ColorRgb =
        {
            new byte[] { 220, 38, 38 }, new byte[] { 245, 135, 20 }, new byte[] { 245, 215, 40 },
            new byte[] { 40, 165, 60 }, new byte[] { 30, 200, 210 }, new byte[] { 35, 80, 220 },
            new byte[] { 130, 50, 190 }, new byte[] { 245, 120, 190 }, new byte[] { 125, 80, 40 },
            new byte[] { 245, 245, 245 }, new byte[] { 20, 20, 20 },
        };

        public static readonly string[] Textures = { "solid", "stripes", "dots", "checker", "fur" };

        public static readonly string[] Backgrounds = { "plain", "gradient", "noise", "grid", "sky" };

        /// <summary>The attribute names, in the order servers report them.</summary>
        public static readonly string[] Attributes =
        {
            "shape", "color", "texture", "background", "size", "position", "n_objects", "light",
        };

        /// <summary>Inclusive (minimum, maximum) of every numeric spec field, keyed part.field.</summary>
        public static readonly Dictionary<string, double[]> Ranges = new Dictionary<string, double[]>
        {
            { "object.size", new[] { 0.02, 1.5 } },
            { "object.x", new[] { 0.0, 1.0 } },
            { "object.y", new[] { 0.0, 1.0 } },
            { "object.rotation", new[] { -360.0, 360.0 } },
            { "lighting.intensity", new[] { 0.1, 2.0 } },
            { "lighting.direction", new[] { -360.0, 360.0 } },
            { "lighting.directional", new[] { 0.0, 1.0 } },
            { "lighting.temperature", new[] { 2000.0, 12000.0 } },
            { "camera.zoom", new[] { 0.25, 4.0 } },
            { "camera.offset_x", new[] { -1.0, 1.0 } },
            { "camera.offset_y", new[] { -1.0, 1.0 } },
        };

        /// <summary>Inclusive (minimum, maximum) of the integer spec fields.</summary>
        public static readonly Dictionary<string, long[]> IntegerRanges = new Dictionary<string, long[]>
        {
            { "scene.width", new[] { 8L, 2048L } },
            { "scene.height", new[] { 8L, 2048L } },
            { "scene.seed", new[] { 0L, long.MaxValue } },
            { "scene.objects", new[] { 1L, 16L } },
        };

        /// <summary>Size bins of the apparent diameter (size x zoom): label and exclusive upper bound.</summary>
        public static readonly string[] SizeLabels = { "small", "medium", "large" };
        public static readonly double[] SizeUpper = { 0.22, 0.38, double.PositiveInfinity };

        /// <summary>Light bins of lighting.intensity: label and exclusive upper bound.</summary>
        public static readonly string[] LightLabels = { "dim", "normal", "bright" };
        public static readonly double[] LightUpper = { 0.7, 1.15, double.PositiveInfinity };

        /// <summary>The label of the first bin whose exclusive upper bound exceeds value.</summary>
        public static string BinLabel(double value, string[] labels, double[] upper)
        {
            for (var i = 0; i < labels.Length; i++)
                if (value < upper[i]) return labels[i];
            return labels[labels.Length - 1];
        }

        /// <summary>The 3x3 grid cell of an apparent centre (x, y) in [0, 1], y downwards.</summary>
        public static string PositionLabel(double x, double y)
        {
            var col = System.Math.Min(2, System.Math.Max(0, (int)(x * 3)));
            var row = System.Math.Min(2, System.Math.Max(0, (int)(y * 3)));
            var horizontal = col == 0 ? "left" : (col == 2 ? "right" : "");
            var vertical = row == 0 ? "top" : (row == 2 ? "bottom" : "");
            if (horizontal.Length == 0 && vertical.Length == 0) return "center";
            if (horizontal.Length == 0) return vertical;
            if (vertical.Length == 0) return horizontal;
            return vertical + "-" + horizontal;
        }

        /// <summary>The sRGB of a colour name (the name must be valid).</summary>
        public static byte[] Rgb(string color)
        {
            return ColorRgb[System.Array.IndexOf(Colors, color)];
        }
    }
}
