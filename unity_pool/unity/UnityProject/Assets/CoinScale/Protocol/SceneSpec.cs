// The scene spec (version 1) as plain C# objects, validated like unity_pool/scene.schema.json
// (every object rejects unknown fields; enums, ranges and integer types are checked), and the
// ground-truth attributes of docs/render-protocol.md, section 2.
//
// Validation stops at the first problem and reports it with the same `path` the Python servers
// use (e.g. objects[0].color) and a message of the same shape:
//   invalid scene spec at objects[0].color: expected one of red, ...; got 'mauve'. Fix: ...
using System;
using System.Collections.Generic;
using System.Globalization;

namespace CoinScale.Protocol
{
    /// <summary>A spec that breaks the schema; Path names the field ("" for the whole spec).</summary>
    public sealed class SceneSpecException : Exception
    {
        public SceneSpecException(string path, string message) : base(message) { Path = path; }

        public string Path { get; private set; }
    }

    /// <summary>One object of a scene; objects[0] is the main object.</summary>
    public sealed class SceneObjectSpec
    {
        public string Shape;
        public string Color;
        public string Texture = "solid";
        /// <summary>Diameter of the bounding circle, fraction of the image's shorter side.</summary>
        public double Size = 0.3;
        /// <summary>Centre, fraction of the width, 0 = left edge.</summary>
        public double X = 0.5;
        /// <summary>Centre, fraction of the height, 0 = top edge.</summary>
        public double Y = 0.5;
        /// <summary>Degrees, counter-clockwise as seen on screen.</summary>
        public double Rotation = 0.0;
    }

    /// <summary>Light over the whole image.</summary>
    public sealed class LightingSpec
    {
        public double Intensity = 1.0;
        /// <summary>Degrees the light comes from, counter-clockwise from the right (90 = top).</summary>
        public double Direction = 90.0;
        /// <summary>Strength of the directional shading, 0 (flat) to 1.</summary>
        public double Directional = 0.3;
        /// <summary>Kelvin; 6500 is neutral.</summary>
        public double Temperature = 6500.0;
    }

    /// <summary>A 2-D camera over the objects (the background stays put).</summary>
    public sealed class CameraSpec
    {
        public double Zoom = 1.0;
        public double OffsetX = 0.0;
        public double OffsetY = 0.0;
    }

    /// <summary>A validated scene spec.</summary>
    public sealed class SceneSpec
    {
        private static readonly string[] TopFields =
            { "version", "objects", "background", "lighting", "camera", "width", "height", "seed" };
        private static readonly string[] ObjectFields = { "shape", "color", "texture", "size", "x", "y", "rotation" };
        private static readonly string[] LightingFields = { "intensity", "direction", "directional", "temperature" };
        private static readonly string[] CameraFields = { "zoom", "offset_x", "offset_y" };

        public List<SceneObjectSpec> Objects = new List<SceneObjectSpec>();
        public string Background = "plain";
        public LightingSpec Lighting = new LightingSpec();
        public CameraSpec Camera = new CameraSpec();
        public int Width = 224;
        public int Height = 224;
        public long Seed = 0;

        /// <summary>The main object, whose attributes label the image.</summary>
        public SceneObjectSpec Main { get { return Objects[0]; } }

        /// <summary>Validate parsed JSON and build the spec; throws SceneSpecException naming the field.</summary>
        public static SceneSpec FromJson(object data)
        {
            var top = data as JsonObject;
            if (top == null)
                throw new SceneSpecException("",
                    "a scene spec must be a JSON object; got " + Framing.TypeName(data));
            CheckFields("", top, TopFields);
            foreach (var required in new[] { "version", "objects" })
                if (!top.ContainsKey(required))
                    throw Fail("", "'" + required + "' is a required property; required fields: version, objects.");
            var spec = new SceneSpec();
            var version = top.Get("version");
            if (!IsNumber(version) || ToDouble(version) != Vocab.SpecVersion)
                throw Fail("version", "expected " + Vocab.SpecVersion + "; got " + Json.Describe(version) + ".");

            var objects = top.Get("objects") as List<object>;
            if (objects == null)
                throw Fail("objects", Json.Describe(top.Get("objects")) + " is not of type 'array'.");
            var countRange = Vocab.IntegerRanges["scene.objects"];
            if (objects.Count < countRange[0] || objects.Count > countRange[1])
                throw Fail("objects",
                    "expected " + countRange[0] + " to " + countRange[1] + " objects; got " + objects.Count + ".");
            for (var i = 0; i < objects.Count; i++)
                spec.Objects.Add(ParseObject("objects[" + i + "]", objects[i]));

            if (top.ContainsKey("background"))
                spec.Background = Choice("background", top.Get("background"), Vocab.Backgrounds);
            if (top.ContainsKey("lighting"))
            {
                var lighting = Section("lighting", top.Get("lighting"), LightingFields);
                var l = spec.Lighting;
                l.Intensity = Number(lighting, "lighting", "intensity", l.Intensity);
                l.Direction = Number(lighting, "lighting", "direction", l.Direction);
                l.Directional = Number(lighting, "lighting", "directional", l.Directional);
                l.Temperature = Number(lighting, "lighting", "temperature", l.Temperature);
            }
            if (top.ContainsKey("camera"))
            {
                var camera = Section("camera", top.Get("camera"), CameraFields);
                var c = spec.Camera;
                c.Zoom = Number(camera, "camera", "zoom", c.Zoom);
                c.OffsetX = Number(camera, "camera", "offset_x", c.OffsetX);
                c.OffsetY = Number(camera, "camera", "offset_y", c.OffsetY);
            }
            spec.Width = (int)Integer(top, "width", spec.Width);
            spec.Height = (int)Integer(top, "height", spec.Height);
            spec.Seed = Integer(top, "seed", spec.Seed);
            return spec;
        }

        /// <summary>The ground-truth attributes (docs/render-protocol.md, section 2), in protocol order.</summary>
        public JsonObject Attributes()
        {
            var main = Main;
            var apparentSize = main.Size * Camera.Zoom;
            var ax = (main.X - 0.5 - Camera.OffsetX) * Camera.Zoom + 0.5;
            var ay = (main.Y - 0.5 - Camera.OffsetY) * Camera.Zoom + 0.5;
            var attributes = new JsonObject();
            attributes["shape"] = main.Shape;
            attributes["color"] = main.Color;
            attributes["texture"] = main.Texture;
            attributes["background"] = Background;
            attributes["size"] = Vocab.BinLabel(apparentSize, Vocab.SizeLabels, Vocab.SizeUpper);
            attributes["position"] = Vocab.PositionLabel(ax, ay);
            attributes["n_objects"] = (long)Objects.Count;
            attributes["light"] = Vocab.BinLabel(Lighting.Intensity, Vocab.LightLabels, Vocab.LightUpper);
            return attributes;
        }

        /// <summary>Where object (x, y) appears in the image, [0, 1], y downwards (after the camera).</summary>
        public void Apparent(SceneObjectSpec obj, out double x, out double y)
        {
            x = (obj.X - 0.5 - Camera.OffsetX) * Camera.Zoom + 0.5;
            y = (obj.Y - 0.5 - Camera.OffsetY) * Camera.Zoom + 0.5;
        }

        private static SceneObjectSpec ParseObject(string where, object data)
        {
            var obj = data as JsonObject;
            if (obj == null) throw Fail(where, Json.Describe(data) + " is not of type 'object'.");
            CheckFields(where, obj, ObjectFields);
            foreach (var required in new[] { "shape", "color" })
                if (!obj.ContainsKey(required))
                    throw Fail(where, "'" + required + "' is a required property; required fields: shape, color.");
            var spec = new SceneObjectSpec();
            spec.Shape = Choice(where + ".shape", obj.Get("shape"), Vocab.Shapes);
            spec.Color = Choice(where + ".color", obj.Get("color"), Vocab.Colors);
            if (obj.ContainsKey("texture")) spec.Texture = Choice(where + ".texture", obj.Get("texture"), Vocab.Textures);
            spec.Size = Number(obj, where, "size", spec.Size, "object.size");
            spec.X = Number(obj, where, "x", spec.X, "object.x");
            spec.Y = Number(obj, where, "y", spec.Y, "object.y");
            spec.Rotation = Number(obj, where, "rotation", spec.Rotation, "object.rotation");
            return spec;
        }

        private static JsonObject Section(string where, object data, string[] allowed)
        {
            var obj = data as JsonObject;
            if (obj == null) throw Fail(where, Json.Describe(data) + " is not of type 'object'.");
            CheckFields(where, obj, allowed);
            return obj;
        }

        private static void CheckFields(string where, JsonObject obj, string[] allowed)
        {
            var extra = new List<string>();
            foreach (var key in obj.Keys)
                if (Array.IndexOf(allowed, key) < 0) extra.Add("'" + key + "'");
            if (extra.Count == 0) return;
            extra.Sort(StringComparer.Ordinal);
            var sorted = (string[])allowed.Clone();
            Array.Sort(sorted, StringComparer.Ordinal);
            throw Fail(where, "unknown field(s) " + string.Join(", ", extra.ToArray()) +
                "; allowed fields: " + string.Join(", ", sorted) + ". Fix: remove or rename them.");
        }

        private static string Choice(string where, object value, string[] choices)
        {
            var s = value as string;
            if (s != null && Array.IndexOf(choices, s) >= 0) return s;
            throw Fail(where, "expected one of " + string.Join(", ", choices) + "; got " + Json.Describe(value) +
                ". Fix: use one of the listed values.");
        }

        private static double Number(JsonObject obj, string where, string key, double fallback, string rangeKey = null)
        {
            if (!obj.ContainsKey(key)) return fallback;
            var path = where + "." + key;
            var value = obj.Get(key);
            if (!IsNumber(value)) throw Fail(path, Json.Describe(value) + " is not of type 'number'.");
            var range = Vocab.Ranges[rangeKey ?? (where + "." + key)];
            var d = ToDouble(value);
            if (d < range[0] || d > range[1])
                throw Fail(path, "expected a number in [" + Json.FormatDouble(range[0]) + ", " +
                    Json.FormatDouble(range[1]) + "]; got " + Json.Describe(value) + ".");
            return d;
        }

        private static long Integer(JsonObject obj, string key, long fallback)
        {
            if (!obj.ContainsKey(key)) return fallback;
            var value = obj.Get(key);
            if (!(value is long))
            {
                var what = IsNumber(value) ? "expected an integer; got " + Json.Describe(value) + "."
                                           : Json.Describe(value) + " is not of type 'integer'.";
                throw Fail(key, what);
            }
            var range = Vocab.IntegerRanges["scene." + key];
            var l = (long)value;
            if (l < range[0] || l > range[1])
                throw Fail(key, "expected a number in [" + range[0].ToString(CultureInfo.InvariantCulture) + ", " +
                    range[1].ToString(CultureInfo.InvariantCulture) + "]; got " + l.ToString(CultureInfo.InvariantCulture) + ".");
            return l;
        }

        private static bool IsNumber(object value) { return value is long || value is double; }

        private static double ToDouble(object value) { return value is long ? (long)value : (double)value; }

        private static SceneSpecException Fail(string path, string what)
        {
            var where = path.Length == 0 ? "(top level)" : path;
            return new SceneSpecException(path, "invalid scene spec at " + where + ": " + what);
        }
    }
}
