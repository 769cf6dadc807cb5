using System.Buffers;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace Bursar.Core.Ledger;

/// <summary>
/// Makes every ledger record durable before its call ends, and writes it to the store off the request path.
/// <see cref="AppendAsync"/> appends the record to the journal (a segment file in the spool folder, preallocated and
/// mapped into memory, so an append is one copy under a lock and no system call: the bytes are in the operating system's
/// page cache at once and survive the process being killed; fsynced as <see cref="LedgerWriterOptions.Fsync"/> says) and hands it to a bounded
/// in-memory queue; the writer loop commits the queue to the store in batches. A journal segment is removed only when
/// the store has committed every record in it, so the queue is never the only copy: a process killed at any point, a
/// store that is down or locked, or a full queue (records then stay only in the journal) leave the records on disk,
/// replayed idempotently by record id when the store is back or at the next start.
/// </summary>
public sealed partial class LedgerWriter : IAsyncDisposable
{
    private readonly ILedgerStore _store;
    private readonly LedgerWriterOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Channel<Entry> _queue;
    private readonly Lock _journalLock = new();
    private readonly HashSet<string> _live = new(StringComparer.Ordinal); // segment files owned by this writer (under _journalLock)
    private readonly List<Segment> _sealed = [];
    private readonly HashSet<string> _overflowOpen = new(StringComparer.Ordinal); // journal files holding records a full queue refused, not yet in the store (under _journalLock)
    private readonly SemaphoreSlim _syncSignal = new(0); // Always: a record waits for an fsync; Interval: the first record since the last fsync
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 0); // a flush barrier or the close cuts the batch's fill short
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _closingToken = new(); // cuts a store retry's wait short when the writer closes
    private Segment? _active;
    private TaskCompletionSource? _pendingSync;
    private bool _dirty;
    private Task? _loop;
    private Task? _flusher;
    private long _spooled;
    private long _written;
    private long _storeFailures;
    private long _journalFailures;
    private int _disposed;
    private volatile bool _closing;
    private volatile bool _replayNeeded = true;

    [ThreadStatic] private static ArrayBufferWriter<byte>? t_buffer;
    [ThreadStatic] private static Utf8JsonWriter? t_json;

    public LedgerWriter(ILedgerStore store, LedgerWriterOptions options, ILogger<LedgerWriter> logger, TimeProvider? time = null)
    {
        options = options.Clone();
        options.Validate();
        _store = store;
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _queue = Channel.CreateBounded<Entry>(new BoundedChannelOptions(options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full: the record then stays only in the journal
            SingleReader = true,
        });
        Directory.CreateDirectory(options.SpoolDirectory);
        _flusher = BackgroundThread.Start("bursar-journal-fsync", options.BackgroundNice, FlushLoop);
    }

    public LedgerWriterOptions Options => _options;

    /// <summary>Records committed to the store by this writer.</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>Records that stayed only in the journal because the queue was full (replayed from it later).</summary>
    public long Spooled => Interlocked.Read(ref _spooled);

    public long StoreFailures => Interlocked.Read(ref _storeFailures);

    /// <summary>Records that could not be appended to the journal (disk full, permissions): they were held in memory only.</summary>
    public long JournalFailures => Interlocked.Read(ref _journalFailures);

    public int Pending => _queue.Reader.Count;

    /// <summary>
    /// Appends the record to the journal and queues it for the store. The returned task completes when the record is as
    /// durable as <see cref="LedgerWriterOptions.Fsync"/> promises: at once with <see cref="LedgerFsync.Interval"/> (it is
    /// already with the operating system), after the next group fsync with <see cref="LedgerFsync.Always"/>. Never waits
    /// for the store and never drops the record.
    /// </summary>
    public ValueTask AppendAsync(LedgerRecord record)
    {
        var sync = Write(record);
        return sync is null ? ValueTask.CompletedTask : new ValueTask(sync.Task);
    }

    /// <summary>Appends the record without waiting for an fsync (see <see cref="AppendAsync"/>).</summary>
    public void Enqueue(LedgerRecord record) => Write(record);

    /// <summary>
    /// Completes when every record appended before the call is in the store: committed from the queue, or replayed from
    /// the journal when a full queue left it there. A store that is down makes it wait (the writer retries); a closing
    /// writer completes it at once (what it did not commit stays in the journal for the next start). Call it before
    /// reading the ledger back in the same process, as a report at the end of a job does.
    /// </summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        string[] overflowed;
        lock (_journalLock) overflowed = [.. _overflowOpen];
        while (true)
        {
            if (_closing || _loop is null) return;
            var flushed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            try
            {
                await _queue.Writer.WriteAsync(new Entry(null!, null, flushed), cancellationToken).ConfigureAwait(false);
                _wake.Set(); // commit now rather than at the end of the batch's fill
            }
            catch (ChannelClosedException)
            {
                return;
            }
            await flushed.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            // a segment a full queue overflowed is replayed once its queued records are committed
            lock (_journalLock) if (!overflowed.Any(_overflowOpen.Contains)) return;
        }
    }

    public void Start()
    {
        _loop ??= BackgroundThread.Start("bursar-ledger-writer", _options.BackgroundNice, () => Run(_stop.Token));
    }

    private TaskCompletionSource? Write(LedgerRecord record)
    {
        var line = Serialize(record);
        TaskCompletionSource? sync = null;
        var signal = false;
        lock (_journalLock)
        {
            var segment = _active;
            try
            {
                if (segment is not null && segment.Length + line.Length > segment.Capacity && segment.Length > 0)
                {
                    // this record does not fit: the segment is full
                    _sealed.Add(segment);
                    segment = _active = null;
                }
                segment ??= _active = OpenSegment(line.Length);
                segment.Append(line);
                // Interval: the fsync thread sleeps until there is something to sync (an idle gateway never wakes it)
                if (!_dirty && _options.Fsync != LedgerFsync.Always) signal = true;
                _dirty = true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Interlocked.Increment(ref _journalFailures);
                LogJournalFailed(_logger, record.Id, _options.SpoolDirectory, e);
                segment = null;
            }
            if (_queue.Writer.TryWrite(new Entry(record, segment)))
            {
                if (segment is not null) segment.Queued++;
            }
            else if (segment is not null)
            {
                // the store is behind: the journal keeps the record and the writer replays it from there
                if (!segment.Overflowed)
                {
                    LogQueueFull(_logger, _options.QueueCapacity, segment.Path);
                    _overflowOpen.Add(segment.Path);
                }
                segment.Overflowed = true;
                Interlocked.Increment(ref _spooled);
            }
            else
            {
                LogLost(_logger, record.Id);
            }
            if (segment is not null)
            {
                if (_options.Fsync == LedgerFsync.Always)
                {
                    if (_pendingSync is null)
                    {
                        _pendingSync = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        signal = true;
                    }
                    sync = _pendingSync;
                }
                if (segment.Length >= _options.SegmentBytes)
                {
                    _sealed.Add(segment);
                    _active = null;
                }
            }
        }
        if (signal) _syncSignal.Release();
        return sync;
    }

    private static ReadOnlySpan<byte> Serialize(LedgerRecord record)
    {
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(2048);
        buffer.ResetWrittenCount();
        var json = t_json;
        if (json is null) t_json = json = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true });
        else json.Reset(buffer);
        JsonSerializer.Serialize(json, record, LedgerJsonContext.Default.LedgerRecord);
        json.Flush();
        buffer.GetSpan(1)[0] = (byte)'\n';
        buffer.Advance(1);
        return buffer.WrittenSpan;
    }

    private Segment OpenSegment(int firstRecordBytes)
    {
        var path = Path.Combine(_options.SpoolDirectory, $"{_time.GetUtcNow():yyyyMMddHHmmssfff}-journal-{Guid.NewGuid():N}.jsonl");
        var segment = Segment.Create(path, Math.Max(_options.SegmentBytes, firstRecordBytes));
        _live.Add(path);
        return segment;
    }

    /// <summary>Group commit: one fsync of each dirty segment serves every record appended before it started.</summary>
    /// <remarks>Runs on its own <see cref="BackgroundThread"/>: an fsync blocks this thread, never one of the pool's.</remarks>
    private void FlushLoop()
    {
        var stop = _stop.Token;
        while (true)
        {
            try
            {
                _syncSignal.Wait(stop);
                if (_options.Fsync != LedgerFsync.Always) Sleep(_options.FsyncInterval, null, stop);
            }
            catch (OperationCanceledException)
            {
                SyncOnce(); // a last fsync of what was written before the writer closed
                return;
            }
            SyncOnce();
        }
    }

    private void SyncOnce()
    {
        TaskCompletionSource? done;
        List<(Segment Segment, long Length)>? dirty = null;
        lock (_journalLock)
        {
            done = _pendingSync;
            _pendingSync = null;
            if (_dirty)
            {
                _dirty = false;
                dirty = [];
                if (_active is { } a && a.Length > a.Synced) dirty.Add((a, a.Length));
                foreach (var s in _sealed) if (s.Length > s.Synced) dirty.Add((s, s.Length));
            }
        }
        if (dirty is not null)
        {
            foreach (var (segment, length) in dirty)
            {
                try
                {
                    segment.FlushToDisk();
                    segment.Synced = length;
                }
                catch (ObjectDisposedException)
                {
                    // committed and removed meanwhile
                }
                catch (IOException e)
                {
                    LogFsyncFailed(_logger, segment.Path, e);
                }
            }
        }
        done?.TrySetResult();
    }

    /// <summary>
    /// Replays every journal file this writer does not own (left by a crash, an earlier run, a failed replay) into the
    /// store, a batch of at most <see cref="LedgerWriterOptions.MaxBatchSize"/> records at a time as the file is read, each
    /// write awaited before the next batch is read; a file is removed once all of it is in the store.
    /// </summary>
    /// <remarks>
    /// A failure part way through a file leaves the whole file for the next replay: the batches already written are
    /// written again then, and the stores ignore a record whose id they hold. The writer's own thread replays through
    /// <see cref="TryReplay"/> instead, which blocks on each write.
    /// </remarks>
    public Task<int> ReplaySpoolAsync(CancellationToken cancellationToken) => ReplayUnownedAsync(blocking: false, cancellationToken).AsTask();

    /// <summary>
    /// <see cref="ReplaySpoolAsync"/> on the writer's own thread (as it starts, and after a store failure), every batch
    /// written blocking: an awaited write of an async store (PostgreSQL) would resume the rest of the replay, its reads and
    /// its writes, on a pool thread. A failure is logged and the replay tried again after the next batch.
    /// </summary>
    private void TryReplay(CancellationToken ct)
    {
        try
        {
            Block(ReplayUnownedAsync(blocking: true, ct)); // completes synchronously: every write in it was blocked on
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Interlocked.Increment(ref _storeFailures);
            _replayNeeded = true;
            LogReplayFailed(_logger, e);
        }
    }

    private async ValueTask<int> ReplayUnownedAsync(bool blocking, CancellationToken ct)
    {
        var replayed = 0;
        foreach (var file in UnownedJournals())
        {
            if (OpenJournal(file) is not { } journal) continue;
            using (journal) replayed += await WriteJournalAsync(journal, blocking, countWritten: true, ct).ConfigureAwait(false);
            Replayed(file);
        }
        _replayNeeded = false;
        if (replayed > 0) LogReplayed(_logger, replayed);
        return replayed;
    }

    /// <summary>
    /// Writes a journal's records to the store a batch at a time as it reads them, each write finished before the next
    /// batch is read: blocked on (<paramref name="blocking"/>, the writer's own thread) or awaited. Returns the records written.
    /// </summary>
    private async ValueTask<int> WriteJournalAsync(LedgerJournalReader journal, bool blocking, bool countWritten, CancellationToken ct)
    {
        var n = 0;
        while (journal.ReadBatch() is { } batch)
        {
            var write = _store.WriteAsync(batch, ct);
            if (blocking) Block(write);
            else await write.ConfigureAwait(false);
            if (countWritten) Interlocked.Add(ref _written, batch.Count);
            n += batch.Count;
        }
        return n;
    }

    /// <summary>The journal files no segment of this writer holds, oldest first.</summary>
    private string[] UnownedJournals()
    {
        lock (_journalLock)
        {
            // a .tmp file is a journal of an older version whose write was cut off by a crash: replay what can be read of it
            foreach (var tmp in Directory.EnumerateFiles(_options.SpoolDirectory, "*.tmp").ToArray())
                File.Move(tmp, Path.ChangeExtension(tmp, ".recovered.jsonl"), overwrite: true);
            return Directory.EnumerateFiles(_options.SpoolDirectory, "*.jsonl").Where(f => !_live.Contains(f)).Order(StringComparer.Ordinal).ToArray();
        }
    }

    /// <summary>A reader of the journal file in batches of <see cref="LedgerWriterOptions.MaxBatchSize"/>; null when a concurrent replay has written and removed it.</summary>
    private LedgerJournalReader? OpenJournal(string file)
    {
        try
        {
            return LedgerJournalReader.Open(file, _options.MaxBatchSize);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Every record of the unowned journal file is in the store: it is not needed any more.</summary>
    private void Replayed(string file)
    {
        lock (_journalLock) _overflowOpen.Remove(file);
        File.Delete(file);
    }

    /// <summary>
    /// The writer loop, on its own <see cref="BackgroundThread"/> (below the request path's priority): it blocks on the
    /// queue and on the store, so the SQLite rows and rollups of a batch are written on this thread, not the pool's.
    /// </summary>
    private void Run(CancellationToken stop)
    {
        TryReplay(stop);
        var batch = new List<Entry>(_options.MaxBatchSize);
        List<TaskCompletionSource>? barriers = null;
        var reader = _queue.Reader;
        while (true)
        {
            try
            {
                var more = reader.WaitToReadAsync(stop);
                if (!(more.IsCompletedSuccessfully ? more.Result : more.AsTask().GetAwaiter().GetResult())) break;
            }
            catch (OperationCanceledException)
            {
                break;
            }
            batch.Clear();
            // let the batch fill for up to FlushInterval: one transaction serves many calls
            var deadline = _time.GetTimestamp() + (long)(_options.FlushInterval.TotalSeconds * _time.TimestampFrequency);
            _wake.Reset(); // before the queue is read: a barrier queued after this read still cuts the wait short
            while (batch.Count < _options.MaxBatchSize)
            {
                while (batch.Count < _options.MaxBatchSize && reader.TryRead(out var r))
                {
                    if (r.Flushed is not null) (barriers ??= []).Add(r.Flushed);
                    else batch.Add(r);
                    if (barriers is not null) break; // a flush is waiting: commit what came before it now
                }
                var left = deadline - _time.GetTimestamp();
                if (barriers is not null || batch.Count >= _options.MaxBatchSize || left <= 0 || _closing || stop.IsCancellationRequested) break;
                try
                {
                    Sleep(TimeSpan.FromSeconds((double)left / _time.TimestampFrequency), _wake, stop);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
            Commit(batch);
            if (_replayNeeded) TryReplay(CancellationToken.None);
            if (barriers is not null)
            {
                foreach (var b in barriers) b.TrySetResult();
                barriers = null;
            }
        }
        // drain what is left on shutdown
        batch.Clear();
        while (reader.TryRead(out var r))
        {
            if (r.Flushed is not null)
            {
                r.Flushed.TrySetResult();
                continue;
            }
            batch.Add(r);
            if (batch.Count == _options.MaxBatchSize)
            {
                Commit(batch);
                batch.Clear();
            }
        }
        if (batch.Count > 0) Commit(batch);
    }

    /// <summary>Waits for <paramref name="task"/> on the calling (dedicated) thread, rethrowing its exception as is.</summary>
    private static void Block(Task task) => task.GetAwaiter().GetResult();

    private static T Block<T>(ValueTask<T> task) => task.GetAwaiter().GetResult();

    /// <summary>
    /// Waits on this background thread for <paramref name="delay"/>, until <paramref name="wake"/> is set or until
    /// <paramref name="stop"/> is canceled (then throws). With the system clock a timed wait on an event: nothing else
    /// wakes (a timer's callback would wake a pool thread, several times a second, on a machine whose cores serve the
    /// request path). With another clock (a test's) the clock's delay, in steps of at most 5 ms so a set
    /// <paramref name="wake"/> is seen.
    /// </summary>
    private void Sleep(TimeSpan delay, ManualResetEventSlim? wake, CancellationToken stop)
    {
        if (ReferenceEquals(_time, TimeProvider.System))
        {
            if (wake is not null) wake.Wait(delay, stop);
            else if (stop.WaitHandle.WaitOne(delay)) stop.ThrowIfCancellationRequested();
            return;
        }
        if (wake is not null) delay = TimeSpan.FromMilliseconds(Math.Min(5, delay.TotalMilliseconds));
        if (wake?.IsSet != true) Block(Task.Delay(delay, _time, stop));
    }

    /// <summary>Writes the batch to the store, retrying while the store is down; when closing, a failed batch stays in the journal for the next start.</summary>
    private void Commit(List<Entry> batch)
    {
        if (batch.Count == 0) return;
        var records = new LedgerRecord[batch.Count];
        for (var i = 0; i < batch.Count; i++) records[i] = batch[i].Record;
        while (true)
        {
            try
            {
                Block(_store.WriteAsync(records, CancellationToken.None));
                Interlocked.Add(ref _written, records.Length);
                break;
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref _storeFailures);
                LogStoreFailed(_logger, records.Length, _options.SpoolDirectory, e);
                if (_closing) return; // the journal keeps them: replayed at the next start
                try { Block(Task.Delay(_options.RetryDelay, _time, _closingToken.Token)); }
                catch (OperationCanceledException) { return; }
            }
        }
        Release(batch);
    }

    /// <summary>The batch is in the store: segments whose every record is committed are removed (an overflowed one is replayed from its file first).</summary>
    private void Release(List<Entry> batch)
    {
        List<Segment>? retire = null;
        lock (_journalLock)
        {
            foreach (var e in batch)
                if (e.Segment is { } s) s.Queued--;
            for (var i = _sealed.Count - 1; i >= 0; i--)
            {
                if (_sealed[i].Queued > 0) continue;
                (retire ??= []).Add(_sealed[i]);
                _sealed.RemoveAt(i);
            }
            if (_active is { Queued: 0 } a && a.Length > 0)
            {
                if (a.Overflowed)
                {
                    // records the full queue could not take are only in this file: close it and replay it
                    (retire ??= []).Add(a);
                    _active = null;
                }
                else
                {
                    // everything in the active segment is committed: start it over instead of opening a new file per batch
                    try
                    {
                        a.Clear();
                    }
                    catch (IOException)
                    {
                        (retire ??= []).Add(a);
                        _active = null;
                    }
                }
            }
        }
        if (retire is null) return;
        foreach (var s in retire) Retire(s);
    }

    /// <summary>
    /// The segment's every queued record is in the store: closes it and removes its file, after writing the file's records
    /// to the store if a full queue left some of them only there. Blocks on the store: it runs on the writer's own thread
    /// (or, once the loop has ended, on the one disposing the writer).
    /// </summary>
    private void Retire(Segment s)
    {
        s.Dispose();
        if (s.Overflowed)
        {
            try
            {
                // written in batches as the file is read, every batch blocking on the writer's own thread as the rest of the
                // replay: an awaited write let an async store (PostgreSQL) resume the next segment's blocking writes on a pool
                // thread. Not added to Written: the queue's commits counted the records of the file that it held.
                int replayed;
                using (var journal = LedgerJournalReader.Open(s.Path, _options.MaxBatchSize))
                    replayed = Block(WriteJournalAsync(journal, blocking: true, countWritten: false, CancellationToken.None));
                lock (_journalLock) _overflowOpen.Remove(s.Path);
                LogReplayed(_logger, replayed);
            }
            catch (Exception e)
            {
                // left on disk, no longer owned: the next replay takes it
                Interlocked.Increment(ref _storeFailures);
                LogReplayFailed(_logger, e);
                lock (_journalLock) _live.Remove(s.Path);
                _replayNeeded = true;
                return;
            }
        }
        try { File.Delete(s.Path); }
        catch (IOException) { _replayNeeded = true; }
        lock (_journalLock) _live.Remove(s.Path);
    }

    /// <summary>
    /// The records of a journal file, all at once (see <see cref="LedgerJournalReader"/> for what is read and what is
    /// skipped). For tests and tools only: the writer's replays read a batch at a time.
    /// </summary>
    internal static List<LedgerRecord> ReadSpoolFile(string path)
    {
        var all = new List<LedgerRecord>();
        using var journal = LedgerJournalReader.Open(path, 1024);
        while (journal.ReadBatch() is { } batch) all.AddRange(batch);
        return all;
    }

    /// <summary>Stops the loop after writing everything queued; whatever the store did not take stays in the journal.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _closing = true;
        _queue.Writer.TryComplete();
        _wake.Set();
        await _closingToken.CancelAsync().ConfigureAwait(false);
        if (_loop is not null) await _loop.ConfigureAwait(false);
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_flusher is not null) await _flusher.ConfigureAwait(false);
        List<Segment> left;
        lock (_journalLock)
        {
            left = [.. _sealed];
            if (_active is not null) left.Add(_active);
            _sealed.Clear();
            _active = null;
        }
        foreach (var s in left)
        {
            if (s.Queued == 0) Retire(s); // blocks here: the writer's thread, where a segment is retired otherwise, has ended
            else s.Dispose(); // records the store has not committed: the file is replayed at the next start
        }
        _stop.Dispose();
        _closingToken.Dispose();
        _syncSignal.Dispose();
        _wake.Dispose();
    }

    /// <summary>A queued record and the journal segment holding it; or, with <paramref name="Flushed"/>, a <see cref="FlushAsync"/> barrier.</summary>
    private readonly record struct Entry(LedgerRecord Record, Segment? Segment, TaskCompletionSource? Flushed = null);

    /// <summary>
    /// One journal file, preallocated to its capacity (so a full disk fails when the segment is opened, as an
    /// <see cref="IOException"/>, never later as a fault on a mapped page) and mapped into memory. Its counters change
    /// under the writer's journal lock; <see cref="Synced"/> only in the flusher. The unused rest of the file is zeros.
    /// </summary>
    private sealed unsafe class Segment : IDisposable
    {
        private readonly SafeFileHandle _handle;
        private readonly MemoryMappedFile _map;
        private readonly MemoryMappedViewAccessor _view;
        private readonly byte* _base;
        private int _disposed;

        private Segment(string path, SafeFileHandle handle, MemoryMappedFile map, MemoryMappedViewAccessor view, long capacity)
        {
            Path = path;
            _handle = handle;
            _map = map;
            _view = view;
            Capacity = capacity;
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + view.PointerOffset;
        }

        public static Segment Create(string path, long capacity)
        {
            var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read | FileShare.Delete, FileOptions.None, preallocationSize: capacity);
            MemoryMappedFile? map = null;
            try
            {
                if (RandomAccess.GetLength(handle) < capacity) RandomAccess.SetLength(handle, capacity);
                map = MemoryMappedFile.CreateFromFile(handle, null, capacity, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
                var view = map.CreateViewAccessor(0, capacity, MemoryMappedFileAccess.ReadWrite);
                return new Segment(path, handle, map, view, capacity);
            }
            catch
            {
                map?.Dispose();
                handle.Dispose();
                try { File.Delete(path); } catch (IOException) { }
                throw;
            }
        }

        public string Path { get; }
        public long Capacity { get; }
        public long Length { get; private set; }
        public long Synced { get; set; }
        /// <summary>Records of this segment in the queue and not yet committed.</summary>
        public int Queued { get; set; }
        /// <summary>Some records of this segment are only in the file (the queue was full): replay it before removing it.</summary>
        public bool Overflowed { get; set; }

        /// <summary>Copies the line into the mapped file (the caller checked it fits).</summary>
        public void Append(ReadOnlySpan<byte> line)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
            line.CopyTo(new Span<byte>(_base + Length, line.Length));
            Length += line.Length;
        }

        /// <summary>Everything in it is committed: zero what was written and start over in the same file.</summary>
        public void Clear()
        {
            var left = Length;
            for (long at = 0; at < left; at += int.MaxValue)
                new Span<byte>(_base + at, (int)Math.Min(int.MaxValue, left - at)).Clear();
            Length = 0;
            Synced = 0;
        }

        /// <summary>Writes the mapped pages and the file to the disk (fsync).</summary>
        public void FlushToDisk()
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
            _view.Flush();
            RandomAccess.FlushToDisk(_handle);
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _map.Dispose();
            _handle.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ledger queue is full ({Capacity} records): records stay in the journal {Journal} and are replayed from it, so none is lost")]
    private static partial void LogQueueFull(ILogger logger, int capacity, string journal);

    [LoggerMessage(Level = LogLevel.Error, Message = "Ledger store write of {Count} records failed; they stay journaled in {Spool} and will be written when the store is back")]
    private static partial void LogStoreFailed(ILogger logger, int count, string spool, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "Replaying the ledger journal failed; will retry")]
    private static partial void LogReplayFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Replayed {Count} ledger records from the journal")]
    private static partial void LogReplayed(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Ledger record {RecordId} could not be appended to the journal in {Spool}; it is held in memory only until the store takes it")]
    private static partial void LogJournalFailed(ILogger logger, string recordId, string spool, Exception exception);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Ledger record {RecordId} is LOST: the journal could not be written and the queue is full")]
    private static partial void LogLost(ILogger logger, string recordId);

    [LoggerMessage(Level = LogLevel.Error, Message = "fsync of the ledger journal {Journal} failed")]
    private static partial void LogFsyncFailed(ILogger logger, string journal, Exception exception);
}
