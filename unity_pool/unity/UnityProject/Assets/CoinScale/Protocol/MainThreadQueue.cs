// Runs work items on one chosen thread (Unity's main thread, which alone may touch the engine)
// for callers on other threads (the protocol server's connection threads), and hands back the
// result. Plain C#: the owner calls RunPending() from its loop (a MonoBehaviour's Update).
using System;
using System.Collections.Generic;
using System.Threading;

namespace CoinScale.Protocol
{
    public sealed class MainThreadQueue
    {
        private sealed class Job
        {
            public Func<Frame, Frame> Work;
            public Frame Input;
            public Frame Output;
            public Exception Error;
            public readonly ManualResetEvent Done = new ManualResetEvent(false);
        }

        private readonly Queue<Job> jobs = new Queue<Job>();
        private volatile bool closed;

        /// <summary>Run work(input) on the owning thread and wait for it; throws what work threw.</summary>
        public Frame Run(Func<Frame, Frame> work, Frame input)
        {
            var job = new Job { Work = work, Input = input };
            lock (jobs)
            {
                if (closed) throw new InvalidOperationException("the render server is shutting down");
                jobs.Enqueue(job);
            }
            while (!job.Done.WaitOne(1000))
                if (closed) throw new InvalidOperationException("the render server is shutting down");
            job.Done.Close();
            if (job.Error != null) throw job.Error;
            return job.Output;
        }

        /// <summary>Run every queued job, in order; call it from the owning thread. Returns how many ran.</summary>
        public int RunPending()
        {
            var ran = 0;
            while (true)
            {
                Job job;
                lock (jobs)
                {
                    if (jobs.Count == 0) return ran;
                    job = jobs.Dequeue();
                }
                try { job.Output = job.Work(job.Input); }
                catch (Exception err) { job.Error = err; }
                job.Done.Set();
                ran++;
            }
        }

        /// <summary>Refuse new jobs and release the waiting callers.</summary>
        public void Close()
        {
            closed = true;
        }
    }
}
