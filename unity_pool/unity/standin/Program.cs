// coin-scale Unity stand-in: the UnityEngine-free protocol code of the Unity project
// (UnityProject/Assets/CoinScale/Protocol) served from a console program, so the launcher, the
// framing, the JSON and the spec validation written for the player can be exercised without
// Unity. Each scene renders to a solid PNG of the main object's colour times the light intensity.
//
// Build (Debian: apt-get install -y --no-install-recommends mono-mcs):
//   mcs -out:standin.exe unity_pool/unity/standin/Program.cs unity_pool/unity/UnityProject/Assets/CoinScale/Protocol/*.cs
// Run, with the Unity player's flags:
//   mono standin.exe -batchmode -logFile - -coinScalePort 0
using System;
using System.Net.Sockets;
using System.Threading;
using CoinScale.Protocol;

namespace CoinScale.Standin
{
    /// <summary>Fills the image with the main object's colour, scaled by lighting.intensity.</summary>
    internal sealed class SolidBackend : IRenderBackend
    {
        public string Name { get { return "unity-standin-cs"; } }

        public RenderedImage Render(SceneSpec spec)
        {
            var rgb = Vocab.Rgb(spec.Main.Color);
            var k = spec.Lighting.Intensity;
            Func<byte, byte> scale = c => (byte)Math.Max(0, Math.Min(255, Math.Round(c * k)));
            return new RenderedImage(Png.Solid(spec.Width, spec.Height, scale(rgb[0]), scale(rgb[1]), scale(rgb[2])), spec.Width, spec.Height);
        }
    }

    internal static class Program
    {
        private static int Main(string[] args)
        {
            ServerOptions options;
            try
            {
                options = ServerOptions.Parse(args);
            }
            catch (ArgumentException err)
            {
                Console.Error.WriteLine("error: " + err.Message);
                return 2;
            }
            // Unity with -logFile - writes its log to stdout before the READY line; so do we.
            Console.Out.WriteLine("[coin-scale] Unity stand-in (C#) starting, pid " + RequestHandler.ProcessId);
            Console.Out.Flush();
            var handler = new RequestHandler(new SolidBackend());
            var gate = new object();
            var server = new ProtocolServer(options.Host, options.Port, frame =>
            {
                lock (gate) return handler.Handle(frame);
            });
            try
            {
                server.Start();
            }
            catch (SocketException err)
            {
                Console.Error.WriteLine("error: cannot listen on " + options.Host + ":" + options.Port + ": " + err.Message);
                return 3;
            }
            Console.Out.WriteLine(ServerOptions.ReadyLine(server.Port));
            Console.Out.Flush();
            Thread.Sleep(Timeout.Infinite);
            return 0;
        }
    }
}
