// A TCP server for the render protocol: one thread per connection, frames in, frames out
// (docs/render-protocol.md, sections 3 and 5). It knows nothing about rendering: every request
// frame goes to a `Func<Frame, Frame>`, which the Unity player routes to its main thread and the
// console stand-in calls under a lock. Mirrors `_Handler` in unity_pool/server.py.
using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;

namespace CoinScale.Protocol
{
    /// <summary>Listens on host:port and answers every frame with the response of `handle`.</summary>
    public sealed class ProtocolServer : IDisposable
    {
        private readonly TcpListener listener;
        private readonly Func<Frame, Frame> handle;
        private readonly Action<string> log;
        private readonly List<TcpClient> clients = new List<TcpClient>();
        private Thread acceptThread;
        private volatile bool stopping;

        /// <param name="host">Address to bind, e.g. 127.0.0.1.</param>
        /// <param name="port">TCP port; 0 picks a free one (see Port).</param>
        /// <param name="handle">Request frame to response frame; must not throw for bad input.</param>
        /// <param name="log">Receives one line per notable event (bad frames, handler failures).</param>
        public ProtocolServer(string host, int port, Func<Frame, Frame> handle, Action<string> log = null)
        {
            this.handle = handle;
            this.log = log ?? (s => Console.Error.WriteLine(s));
            listener = new TcpListener(IPAddress.Parse(host), port);
            listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        }

        /// <summary>The port actually bound (after Start).</summary>
        public int Port { get { return ((IPEndPoint)listener.LocalEndpoint).Port; } }

        /// <summary>Bind and start accepting; throws SocketException when the port cannot be bound.</summary>
        public void Start()
        {
            listener.Start();
            acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "coin-scale accept" };
            acceptThread.Start();
        }

        /// <summary>Stop listening and close every connection.</summary>
        public void Stop()
        {
            stopping = true;
            try { listener.Stop(); } catch (SocketException) { }
            lock (clients)
            {
                foreach (var client in clients) client.Close();
                clients.Clear();
            }
        }

        public void Dispose() { Stop(); }

        private void AcceptLoop()
        {
            while (!stopping)
            {
                TcpClient client;
                try
                {
                    client = listener.AcceptTcpClient();
                }
                catch (Exception err)
                {
                    if (stopping) return;
                    if (!(err is SocketException) && !(err is ObjectDisposedException) && !(err is InvalidOperationException)) throw;
                    log("accept failed: " + err.Message);
                    Thread.Sleep(50);
                    continue;
                }
                client.NoDelay = true;
                lock (clients) clients.Add(client);
                var thread = new Thread(() => Serve(client)) { IsBackground = true, Name = "coin-scale connection" };
                thread.Start();
            }
        }

        private void Serve(TcpClient client)
        {
            var peer = SafePeer(client);
            try
            {
                using (var stream = client.GetStream())
                {
                    while (!stopping)
                    {
                        Frame request;
                        try
                        {
                            request = Framing.Read(stream);
                        }
                        catch (FrameException err)
                        {
                            log("bad frame from " + peer + ": " + err.Message);
                            if (!Send(stream, new Frame(RequestHandler.ErrorResponse(err.ErrorType, err.Message, null, null), null))) return;
                            if (err.Fatal) return;
                            continue;
                        }
                        if (request == null) return;
                        Frame response;
                        try
                        {
                            response = handle(request);
                        }
                        catch (Exception err)
                        {
                            log("failed to handle a request from " + peer + ": " + err);
                            response = new Frame(RequestHandler.ErrorResponse(ErrorTypes.Internal, err.GetType().Name + ": " + err.Message, null, null), null);
                        }
                        if (!Send(stream, response)) return;
                    }
                }
            }
            catch (Exception err)
            {
                if (!(err is IOException) && !(err is SocketException) && !(err is ObjectDisposedException)) log("connection from " + peer + " failed: " + err);
            }
            finally
            {
                lock (clients) clients.Remove(client);
                client.Close();
            }
        }

        private bool Send(Stream stream, Frame response)
        {
            try
            {
                try
                {
                    Framing.Write(stream, response.Header, response.Blobs);
                }
                catch (FrameException err)
                {
                    // the response is too large to frame: answer with the reason instead
                    var fallback = RequestHandler.ErrorResponse(err.ErrorType, err.Message, response.Header.Get("id"), null);
                    Framing.Write(stream, fallback, null);
                }
                catch (JsonException err)
                {
                    var fallback = RequestHandler.ErrorResponse(ErrorTypes.Internal, err.Message, response.Header.Get("id"), null);
                    Framing.Write(stream, fallback, null);
                }
            }
            catch (Exception err)
            {
                if (!(err is IOException) && !(err is SocketException) && !(err is ObjectDisposedException)) throw;
                return false;
            }
            return true;
        }

        private static string SafePeer(TcpClient client)
        {
            try { return client.Client.RemoteEndPoint.ToString(); }
            catch (Exception) { return "?"; }
        }
    }
}
