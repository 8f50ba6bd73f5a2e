// The messages of the render protocol (docs/render-protocol.md, section 4): ping and render,
// answered by a RequestHandler around any IRenderBackend. Mirrors RenderServer.handle_request_frame
// in unity_pool/server.py: a bad spec becomes an invalid_scene result, a backend exception an
// internal one, and nothing a client sends makes it throw.
using System;
using System.Collections.Generic;
using System.Diagnostics;

namespace CoinScale.Protocol
{
    /// <summary>What a backend returns for one scene: an encoded image and its size.</summary>
    public sealed class RenderedImage
    {
        public RenderedImage(byte[] data, int width, int height, string format = "png")
        {
            Data = data;
            Width = width;
            Height = height;
            Format = format;
        }

        public byte[] Data { get; private set; }
        public int Width { get; private set; }
        public int Height { get; private set; }
        public string Format { get; private set; }
    }

    /// <summary>A renderer the protocol can host (the Unity scene builder, the stand-in's solid fill).</summary>
    public interface IRenderBackend
    {
        /// <summary>Short name reported by ping, e.g. "unity".</summary>
        string Name { get; }

        /// <summary>Render one validated spec to an encoded image.</summary>
        RenderedImage Render(SceneSpec spec);
    }

    /// <summary>Turns request frames into response frames for one backend.</summary>
    public sealed class RequestHandler
    {
        /// <summary>A render request with more scenes is answered too_large.</summary>
        public const int MaxScenesPerRequest = 4096;

        private readonly IRenderBackend backend;
        private readonly Action<string> logError;

        /// <param name="logError">Receives the traceback of a backend failure (the answer carries only the message).</param>
        public RequestHandler(IRenderBackend backend, Action<string> logError = null)
        {
            this.backend = backend;
            this.logError = logError ?? (s => Console.Error.WriteLine(s));
        }

        /// <summary>The process id reported by ping.</summary>
        public static long ProcessId
        {
            get { return Process.GetCurrentProcess().Id; }
        }

        /// <summary>The response (header without "blobs", and the blobs) to one request frame.</summary>
        public Frame Handle(Frame request)
        {
            var header = request.Header;
            var id = header.Get("id");
            var op = header.Get("op");
            if ("ping".Equals(op))
            {
                var pong = Ok(id);
                pong["backend"] = backend.Name;
                pong["pid"] = ProcessId;
                pong["formats"] = new List<object> { "png" };
                return new Frame(pong, null);
            }
            if (!"render".Equals(op))
                return new Frame(ErrorResponse(ErrorTypes.BadRequest,
                    "unknown op " + Json.Describe(op) + "; expected one of: ping, render", id, null), null);
            List<object> scenes = null;
            if (header.ContainsKey("scenes")) scenes = header.Get("scenes") as List<object>;
            else if (header.ContainsKey("scene")) scenes = new List<object> { header.Get("scene") };
            if (scenes == null)
                return new Frame(ErrorResponse(ErrorTypes.BadRequest,
                    "a render request needs `scene` (an object) or `scenes` (a list of objects)", id, null), null);
            if (scenes.Count > MaxScenesPerRequest)
                return new Frame(ErrorResponse(ErrorTypes.TooLarge,
                    scenes.Count + " scenes in one request; expected at most " + MaxScenesPerRequest, id, null), null);
            var results = new List<object>();
            var blobs = new List<byte[]>();
            foreach (var scene in scenes)
            {
                byte[] blob;
                var result = RenderOne(scene, out blob);
                if (blob != null)
                {
                    result["blob"] = (long)blobs.Count;
                    blobs.Add(blob);
                }
                results.Add(result);
            }
            var response = Ok(id);
            response["results"] = results;
            return new Frame(response, blobs);
        }

        private JsonObject RenderOne(object data, out byte[] blob)
        {
            blob = null;
            var clock = Stopwatch.StartNew();
            SceneSpec spec;
            try
            {
                spec = SceneSpec.FromJson(data);
            }
            catch (SceneSpecException err)
            {
                return ErrorResponse(ErrorTypes.InvalidScene, err.Message, null, err.Path.Length > 0 ? err.Path : null);
            }
            RenderedImage image;
            try
            {
                image = backend.Render(spec);
            }
            catch (Exception err)
            {
                logError("backend " + backend.Name + " failed on a scene: " + err);
                return ErrorResponse(ErrorTypes.Internal, err.GetType().Name + ": " + err.Message, null, null);
            }
            var result = new JsonObject();
            result["ok"] = true;
            result["format"] = image.Format;
            result["width"] = (long)image.Width;
            result["height"] = (long)image.Height;
            result["attributes"] = spec.Attributes();
            result["render_ms"] = Math.Round(clock.Elapsed.TotalMilliseconds, 3);
            blob = image.Data;
            return result;
        }

        private static JsonObject Ok(object id)
        {
            var header = new JsonObject();
            header["protocol"] = (long)Framing.ProtocolVersion;
            header["ok"] = true;
            header["id"] = id;
            return header;
        }

        /// <summary>The header of a failed response, or one failed result of a batch.</summary>
        public static JsonObject ErrorResponse(string type, string message, object id, string path)
        {
            var error = new JsonObject();
            error["type"] = type;
            error["message"] = message;
            if (path != null) error["path"] = path;
            var header = new JsonObject();
            header["protocol"] = (long)Framing.ProtocolVersion;
            header["ok"] = false;
            header["error"] = error;
            if (id != null) header["id"] = id;
            return header;
        }
    }
}
