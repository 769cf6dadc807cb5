using System.Runtime.InteropServices;

namespace Bursar.Core.Ledger;

/// <summary>
/// A dedicated background thread for the ledger's own work (the store writer, the journal's fsync), started below the
/// request path's priority: on Linux its nice value is raised by <see cref="LedgerWriterOptions.BackgroundNice"/>, so a
/// request that needs the CPU wins it over a batch of SQLite rows or an fsync, and the thread pool that serves requests
/// never has a thread blocked in either. Elsewhere (or when the kernel refuses) the thread runs at normal priority.
/// </summary>
internal static partial class BackgroundThread
{
    /// <summary>Runs <paramref name="body"/> on a new background thread; the task completes (or faults) when it returns.</summary>
    public static Task Start(string name, int niceIncrement, Action body)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            Lower(niceIncrement);
            try
            {
                body();
                done.TrySetResult();
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        })
        { IsBackground = true, Name = name };
        thread.Start();
        return done.Task;
    }

    /// <summary>The calling thread's nice value on Linux (null elsewhere or when it cannot be read), for tests and diagnostics.</summary>
    public static int? CurrentNice()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            Marshal.SetLastPInvokeError(0);
            var nice = getpriority(PrioProcess, gettid());
            return nice == -1 && Marshal.GetLastPInvokeError() != 0 ? null : nice;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    private static void Lower(int increment)
    {
        if (increment <= 0 || CurrentNice() is not { } nice) return;
        try
        {
            // Linux keeps a nice value per thread: PRIO_PROCESS with a thread id changes only this thread
            _ = setpriority(PrioProcess, gettid(), Math.Min(19, nice + increment));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // not glibc: the thread keeps its priority
        }
    }

    private const int PrioProcess = 0;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getpriority(int which, int who);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setpriority(int which, int who, int prio);

    [LibraryImport("libc")]
    private static partial int gettid();
}
