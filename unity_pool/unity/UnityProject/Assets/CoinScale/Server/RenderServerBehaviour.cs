// The render server of the Unity player: started when the player runs with -coinScalePort N.
//
//   <player> -batchmode -logFile - -coinScalePort 0
//
// -batchmode without -nographics keeps a graphics device, so cameras render; -logFile - sends
// Debug.Log to stdout, where `READY <port>` tells a supervisor (unity_pool/unity/launcher.py)
// that the server listens. The protocol (framing, JSON, validation, attributes) lives in the
// UnityEngine-free CoinScale.Protocol assembly; this behaviour owns the TCP server, routes every
// request to Unity's main thread (Update) and renders with SceneBuilder.
using System;
using System.Net.Sockets;
using CoinScale.Protocol;
using CoinScale.Rendering;
using UnityEngine;

namespace CoinScale.Server
{
    /// <summary>Renders on the main thread for the protocol's request handler.</summary>
    internal sealed class UnityRenderBackend : IRenderBackend
    {
        private readonly SceneBuilder builder;

        public UnityRenderBackend(SceneBuilder builder) { this.builder = builder; }

        public string Name { get { return "unity"; } }

        public RenderedImage Render(SceneSpec spec)
        {
            return new RenderedImage(builder.Render(spec), spec.Width, spec.Height);
        }
    }

    public sealed class RenderServerBehaviour : MonoBehaviour
    {
        /// <summary>Exit status when the port cannot be bound (the protocol's contract).</summary>
        public const int ExitCannotBind = 3;
        /// <summary>Exit status when the catalog asset is missing.</summary>
        public const int ExitNoCatalog = 4;
        /// <summary>Exit status for a malformed -coinScalePort.</summary>
        public const int ExitBadArguments = 2;

        [Tooltip("Optional: a catalog to use instead of Resources/CoinScaleCatalog.")]
        public CoinScaleCatalog catalog;

        [Tooltip("Player frames per second while idle; a request waits at most one frame for the main thread.")]
        public int frameRate = 240;

        private readonly MainThreadQueue queue = new MainThreadQueue();
        private ServerOptions options;
        private ProtocolServer server;
        private SceneBuilder builder;

        /// <summary>Adds the server to the first scene when the player was started with -coinScalePort.</summary>
        [RuntimeInitializeOnLoadMethod(RuntimeInitializeLoadType.AfterSceneLoad)]
        private static void Bootstrap()
        {
            ServerOptions parsed;
            try
            {
                parsed = ServerOptions.Parse(Environment.GetCommandLineArgs());
            }
            catch (ArgumentException err)
            {
                Debug.LogError("coin-scale: " + err.Message);
                Application.Quit(ExitBadArguments);
                return;
            }
            if (!parsed.Serve || FindObjectOfType<RenderServerBehaviour>() != null) return;
            var host = new GameObject("CoinScaleRenderServer");
            DontDestroyOnLoad(host);
            host.AddComponent<RenderServerBehaviour>().options = parsed;
        }

        private void Start()
        {
            // clean stdout: no stack trace under every Debug.Log line, so READY is a line of its own
            Application.SetStackTraceLogType(LogType.Log, StackTraceLogType.None);
            Application.SetStackTraceLogType(LogType.Warning, StackTraceLogType.None);
            Application.runInBackground = true;
            QualitySettings.vSyncCount = 0;
            Application.targetFrameRate = frameRate;
            if (options == null)
            {
                try { options = ServerOptions.Parse(Environment.GetCommandLineArgs()); }
                catch (ArgumentException err) { Debug.LogError("coin-scale: " + err.Message); Application.Quit(ExitBadArguments); return; }
            }
            if (!options.Serve)
            {
                Debug.Log("coin-scale: no " + ServerOptions.PortFlag + " on the command line; render server off");
                enabled = false;
                return;
            }
            if (SystemInfo.graphicsDeviceType == UnityEngine.Rendering.GraphicsDeviceType.Null)
                Debug.LogError("coin-scale: no graphics device (was the player started with -nographics?); " +
                    "cameras cannot render. Fix: start it with -batchmode but without -nographics (docs/unity.md).");
            if (catalog == null) catalog = Resources.Load<CoinScaleCatalog>(CoinScaleCatalog.ResourceName);
            if (catalog == null)
            {
                Debug.LogError("coin-scale: no catalog at Resources/" + CoinScaleCatalog.ResourceName + ". Fix: in the " +
                    "editor run CoinScale > Create Catalog, fill it, and rebuild the player (docs/unity.md).");
                Application.Quit(ExitNoCatalog);
                return;
            }
            var missing = catalog.Missing();
            if (missing.Count > 0)
                Debug.LogWarning("coin-scale: the catalog lacks " + string.Join(", ", missing.ToArray()) +
                    "; scenes that use them fail with an `internal` error naming the entry");
            builder = new SceneBuilder(catalog);
            var handler = new RequestHandler(new UnityRenderBackend(builder), message => Debug.LogError(message));
            server = new ProtocolServer(options.Host, options.Port, frame => queue.Run(handler.Handle, frame),
                message => Debug.LogWarning("coin-scale: " + message));
            try
            {
                server.Start();
            }
            catch (SocketException err)
            {
                Debug.LogError("error: cannot listen on " + options.Host + ":" + options.Port + ": " + err.Message);
                Application.Quit(ExitCannotBind);
                return;
            }
            Debug.Log(ServerOptions.ReadyLine(server.Port));
        }

        private void Update()
        {
            queue.RunPending();
        }

        private void OnDestroy()
        {
            queue.Close();
            if (server != null) server.Stop();
            if (builder != null) builder.Dispose();
            server = null;
            builder = null;
        }
    }
}
