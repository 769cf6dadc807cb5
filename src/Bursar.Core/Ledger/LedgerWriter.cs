using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Bursar.Core.Ledger;

/// <summary>
/// Writes ledger records off the request path without losing any. <see cref="Enqueue"/> never blocks on the store:
/// records go to a bounded in-memory queue, or, when it is full, straight to the durable spool. The writer loop
/// journals each batch to the spool (fsync) before writing it to the store and deletes the journal after the commit,
/// so a writer killed mid-batch, or a store that is down or locked, leaves the batch on disk to be replayed
/// (idempotently, by record id) on the next start or retry.
/// </summary>
public sealed partial class LedgerWriter : IAsyncDisposable
{
    private readonly ILedgerStore _store;
    private readonly LedgerWriterOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Channel<LedgerRecord> _queue;
    private readonly Lock _spoolLock = new();
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;
    private long _spooled;
    private long _written;
    private long _storeFailures;
    private int _disposed;
    private volatile bool _closing;

    public LedgerWriter(ILedgerStore store, LedgerWriterOptions options, ILogger<LedgerWriter> logger, TimeProvider? time = null)
    {
        options.Validate();
        _store = store;
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _queue = Channel.CreateBounded<LedgerRecord>(new BoundedChannelOptions(options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full; we spool instead
            SingleReader = true,
        });
        Directory.CreateDirectory(options.SpoolDirectory);
    }

    /// <summary>Records committed to the store by this writer.</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>Records that went to the spool because the queue was full.</summary>
    public long Spooled => Interlocked.Read(ref _spooled);

    public long StoreFailures => Interlocked.Read(ref _storeFailures);

    public int Pending => _queue.Reader.Count;

    /// <summary>Test hook: runs between writing a spool file and renaming it (inside the spool lock).</summary>
    internal Action? AfterTempWritten { get; set; }

    /// <summary>Hands a record to the writer. Never blocks on the store and never drops the record.</summary>
    public void Enqueue(LedgerRecord record)
    {
        if (_queue.Writer.TryWrite(record)) return;
        Interlocked.Increment(ref _spooled);
        LogQueueFull(_logger, _options.QueueCapacity);
        WriteSpoolFile([record], "overflow");
    }

    public void Start()
    {
        _loop ??= Task.Run(() => RunAsync(_stop.Token));
    }

    /// <summary>Replays every batch left in the spool (by a crash, an outage or a full queue) into the store.</summary>
    public async Task<int> ReplaySpoolAsync(CancellationToken cancellationToken)
    {
        // a .tmp file outside the spool lock is a journal whose write was cut off by a crash (a live write holds the lock
        // from create to rename): promote it so it is replayed like the others, keeping what can be read of it
        lock (_spoolLock)
        {
            foreach (var tmp in Directory.EnumerateFiles(_options.SpoolDirectory, "*.tmp").ToArray())
                File.Move(tmp, Path.ChangeExtension(tmp, ".recovered.jsonl"), overwrite: true);
        }
        var replayed = 0;
        foreach (var file in Directory.EnumerateFiles(_options.SpoolDirectory, "*.jsonl").Order(StringComparer.Ordinal).ToArray())
        {
            List<LedgerRecord> records;
            try
            {
                records = ReadSpoolFile(file);
            }
            catch (FileNotFoundException)
            {
                continue; // committed and deleted by the writer meanwhile
            }
            if (records.Count > 0)
            {
                await _store.WriteAsync(records, cancellationToken).ConfigureAwait(false);
                Interlocked.Add(ref _written, records.Count);
            }
            File.Delete(file);
            replayed += records.Count;
        }
        if (replayed > 0) LogReplayed(_logger, replayed);
        return replayed;
    }

    private async Task RunAsync(CancellationToken stop)
    {
        await TryReplayAsync(stop).ConfigureAwait(false);
        var batch = new List<LedgerRecord>(_options.MaxBatchSize);
        var reader = _queue.Reader;
        while (true)
        {
            try
            {
                if (!await reader.WaitToReadAsync(stop).ConfigureAwait(false)) break;
            }
            catch (OperationCanceledException)
            {
                break;
            }
            batch.Clear();
            // let the batch fill for up to FlushInterval: one journal write and one transaction serve many calls
            var deadline = _time.GetTimestamp() + (long)(_options.FlushInterval.TotalSeconds * _time.TimestampFrequency);
            while (batch.Count < _options.MaxBatchSize)
            {
                while (batch.Count < _options.MaxBatchSize && reader.TryRead(out var r)) batch.Add(r);
                var left = deadline - _time.GetTimestamp();
                if (batch.Count >= _options.MaxBatchSize || left <= 0 || _closing || stop.IsCancellationRequested) break;
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5, left * 1000.0 / _time.TimestampFrequency)), _time, stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
            await CommitAsync(batch, CancellationToken.None).ConfigureAwait(false);
            if (Directory.EnumerateFiles(_options.SpoolDirectory, "*.jsonl").Any())
                await TryReplayAsync(CancellationToken.None).ConfigureAwait(false);
        }
        // drain what is left on shutdown
        batch.Clear();
        while (reader.TryRead(out var r))
        {
            batch.Add(r);
            if (batch.Count == _options.MaxBatchSize)
            {
                await CommitAsync(batch, CancellationToken.None).ConfigureAwait(false);
                batch.Clear();
            }
        }
        if (batch.Count > 0) await CommitAsync(batch, CancellationToken.None).ConfigureAwait(false);
    }

    private async Task CommitAsync(List<LedgerRecord> batch, CancellationToken ct)
    {
        if (batch.Count == 0) return;
        var journal = WriteSpoolFile(batch, "batch");
        try
        {
            await _store.WriteAsync(batch, ct).ConfigureAwait(false);
            Interlocked.Add(ref _written, batch.Count);
            File.Delete(journal);
        }
        catch (Exception e)
        {
            // the journal stays in the spool and is replayed when the store is back
            Interlocked.Increment(ref _storeFailures);
            LogStoreFailed(_logger, batch.Count, journal, e);
            try { await Task.Delay(_options.RetryDelay, _time, _stop.IsCancellationRequested ? CancellationToken.None : _stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { }
        }
    }

    private async Task TryReplayAsync(CancellationToken ct)
    {
        try
        {
            await ReplaySpoolAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Interlocked.Increment(ref _storeFailures);
            LogReplayFailed(_logger, e);
        }
    }

    private string WriteSpoolFile(IReadOnlyList<LedgerRecord> records, string kind)
    {
        var name = $"{_time.GetUtcNow():yyyyMMddHHmmssfff}-{kind}-{Guid.NewGuid():N}";
        var tmp = Path.Combine(_options.SpoolDirectory, name + ".tmp");
        var final = Path.Combine(_options.SpoolDirectory, name + ".jsonl");
        lock (_spoolLock)
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 64 * 1024))
            {
                using (var w = new Utf8JsonWriter(fs, new JsonWriterOptions { SkipValidation = true }))
                {
                    foreach (var r in records)
                    {
                        JsonSerializer.Serialize(w, r, LedgerJsonContext.Default.LedgerRecord);
                        w.Flush();
                        w.Reset();
                        fs.WriteByte((byte)'\n');
                    }
                }
                fs.Flush(flushToDisk: true);
            }
            AfterTempWritten?.Invoke();
            File.Move(tmp, final);
        }
        return final;
    }

    internal static List<LedgerRecord> ReadSpoolFile(string path)
    {
        var list = new List<LedgerRecord>();
        foreach (var line in File.ReadLines(path, Encoding.UTF8))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                var r = JsonSerializer.Deserialize(line, LedgerJsonContext.Default.LedgerRecord);
                if (r is not null) list.Add(r);
            }
            catch (JsonException)
            {
                // a line cut off by a crash mid-write: the rest of the file is still good
            }
        }
        return list;
    }

    /// <summary>Stops the loop after writing everything queued.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _closing = true;
        _queue.Writer.TryComplete();
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }
        _stop.Cancel();
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ledger queue is full ({Capacity} records); spooling to disk so no record is lost")]
    private static partial void LogQueueFull(ILogger logger, int capacity);

    [LoggerMessage(Level = LogLevel.Error, Message = "Ledger store write of {Count} records failed; the batch stays journaled at {Journal} and will be replayed")]
    private static partial void LogStoreFailed(ILogger logger, int count, string journal, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "Replaying the ledger spool failed; will retry")]
    private static partial void LogReplayFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Replayed {Count} ledger records from the spool")]
    private static partial void LogReplayed(ILogger logger, int count);
}
