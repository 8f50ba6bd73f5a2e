// Command-line flags shared by the Unity player and the console stand-in, in Unity's style
// (single dash, space before the value): -coinScalePort N [-coinScaleHost ADDRESS].
using System;
using System.Globalization;

namespace CoinScale.Protocol
{
    /// <summary>The server's settings from the command line.</summary>
    public sealed class ServerOptions
    {
        /// <summary>Flag that turns a player into a render server and names its port.</summary>
        public const string PortFlag = "-coinScalePort";

        /// <summary>Flag for the address to bind (default 127.0.0.1).</summary>
        public const string HostFlag = "-coinScaleHost";

        /// <summary>TCP port; 0 picks a free one (reported on the READY line).</summary>
        public int Port = 0;

        /// <summary>Address to bind.</summary>
        public string Host = "127.0.0.1";

        /// <summary>True when PortFlag was given (the player should serve).</summary>
        public bool Serve;

        /// <summary>Read the flags; other arguments (Unity's own) are ignored. Throws ArgumentException naming a bad flag.</summary>
        public static ServerOptions Parse(string[] args)
        {
            var options = new ServerOptions();
            for (var i = 0; i < args.Length; i++)
            {
                if (args[i] == PortFlag)
                {
                    int port;
                    if (i + 1 >= args.Length || !int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out port) || port > 65535)
                        throw new ArgumentException(PortFlag + ": expected a port 0..65535; got " +
                            (i + 1 < args.Length ? "'" + args[i + 1] + "'" : "nothing"));
                    options.Port = port;
                    options.Serve = true;
                    i++;
                }
                else if (args[i] == HostFlag)
                {
                    if (i + 1 >= args.Length) throw new ArgumentException(HostFlag + ": expected an address; got nothing");
                    options.Host = args[++i];
                }
            }
            return options;
        }

        /// <summary>The line a supervisor waits for once the server listens.</summary>
        public static string ReadyLine(int port)
        {
            return "READY " + port.ToString(CultureInfo.InvariantCulture);
        }
    }
}
