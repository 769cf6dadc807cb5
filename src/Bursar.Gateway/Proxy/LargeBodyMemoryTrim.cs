using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// Gives memory back to the operating system after large request bodies. A multi-megabyte body is copied several
/// times on its way (the body, its DOM, the upstream request, the Simulator's view of it); the GC reuses that memory but
/// does not return it while the process is idle, so a burst of large or hostile bodies left the gateway holding
/// gigabytes. Once bodies over <see cref="Threshold"/> have been seen and none for <see cref="Quiet"/>, the shared array
/// pool's arrays of at least that size are dropped (<see cref="SharedArrayPoolRelease"/>: System.Text.Json's buffers for
/// those bodies, which the pool would otherwise keep for good: 110-160 MB after the soak's thirty 5 MB bodies), then one
/// compacting collection in aggressive mode decommits the freed memory. Normal-sized traffic never triggers it.
/// </summary>
public sealed partial class LargeBodyMemoryTrim(TimeProvider time, ILogger<LargeBodyMemoryTrim> logger) : BackgroundService
{
    /// <summary>Bodies at least this large count (1 MiB, the largest pooled body buffer).</summary>
    public const int Threshold = RequestBody.MaxPooledBodyBytes;

    /// <summary>How long no large body must arrive before the trim runs.</summary>
    public static readonly TimeSpan Quiet = TimeSpan.FromSeconds(2);

    private static long s_largeBodies; // bodies seen so far: no clock on the request path
    private long _seenAtLastTick;
    private long _trimmedAt;

    /// <summary>Times the trim has run.</summary>
    public int Trims { get; private set; }

    /// <summary>Called for every request body at least <see cref="Threshold"/> bytes long.</summary>
    public static void LargeBodySeen() => Interlocked.Increment(ref s_largeBodies);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try { await Task.Delay(Quiet, time, stoppingToken).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            // trim when large bodies arrived since the last trim but none during the last quiet period
            var seen = Interlocked.Read(ref s_largeBodies);
            var quiet = seen == _seenAtLastTick;
            _seenAtLastTick = seen;
            if (!quiet || seen == _trimmedAt) continue;
            _trimmedAt = seen;
            var before = Environment.WorkingSet;
            // the shared pool's multi-megabyte arrays (System.Text.Json's parse and write buffers for the large bodies) go first, or the collection keeps them
            var pooled = Math.Max(0, SharedArrayPoolRelease.Release<byte>(Threshold)) + Math.Max(0, SharedArrayPoolRelease.Release<char>(Threshold));
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            Trims++;
            var info = GC.GetGCMemoryInfo(GCKind.Any);
            LogTrimmed(logger, before / (1024 * 1024), Environment.WorkingSet / (1024 * 1024), info.HeapSizeBytes / (1024 * 1024), info.TotalCommittedBytes / (1024 * 1024), pooled / (1024 * 1024));
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Large request bodies went quiet: memory trimmed from {BeforeMb} MB to {AfterMb} MB resident (GC heap {HeapMb} MB, committed {CommittedMb} MB; {PooledMb} MB of pooled arrays dropped)")]
    private static partial void LogTrimmed(ILogger logger, long beforeMb, long afterMb, long heapMb, long committedMb, long pooledMb);
}
