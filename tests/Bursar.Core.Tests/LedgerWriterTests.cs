using Bursar.Core.Ledger;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Tests;

public sealed class LedgerWriterTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-ledger-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private LedgerWriterOptions Options(int capacity = 1024, int batch = 64) => new()
    {
        SpoolDirectory = Path.Combine(_dir, "spool"),
        QueueCapacity = capacity,
        MaxBatchSize = batch,
        RetryDelay = TimeSpan.FromMilliseconds(20),
    };

    private static LedgerRecord Record(int i) => new()
    {
        Id = $"rec-{i:D6}",
        Timestamp = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000 + i),
        Dialect = "openai",
        Outcome = "ok",
        Feature = "f" + (i % 3),
        InputTokens = i,
        OutputTokens = 2 * i,
        Priced = true,
        Cost = i * 0.000001m,
    };

    private static async Task Eventually(Func<Task<bool>> condition, string what)
    {
        for (var i = 0; i < 400; i++)
        {
            if (await condition()) return;
            await Task.Delay(25);
        }
        Assert.Fail("Timed out waiting for: " + what);
    }

    [Fact]
    public async Task Every_enqueued_record_reaches_the_store_with_exact_money()
    {
        var store = new SqliteStore(Path.Combine(_dir, "a.db"));
        await using (var w = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
        {
            w.Start();
            for (var i = 0; i < 1000; i++) w.Enqueue(Record(i));
        }
        Assert.Equal(1000, await store.CountAsync(default));
        var back = await store.ReadAsync(new LedgerQuery { Limit = 5000 }, default);
        Assert.Equal(Enumerable.Range(0, 1000).Sum(i => i * 0.000001m), back.Sum(r => r.Cost!.Value));
        Assert.Equal(0.000999m, back.Single(r => r.Id == "rec-000999").Cost);
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir, "spool")));
    }

    /// <summary>A store that commits part of a batch and then dies: a writer killed mid-batch.</summary>
    /// <summary>Notes the thread each write ran on: its name, whether it was one of the pool's, and its nice value.</summary>
    private sealed class ThreadNotingStore(ILedgerStore inner) : ILedgerStore
    {
        public readonly System.Collections.Concurrent.ConcurrentBag<(string? Name, bool Pool, int? Nice)> Writes = [];

        public Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken cancellationToken)
        {
            Writes.Add((Thread.CurrentThread.Name, Thread.CurrentThread.IsThreadPoolThread, BackgroundThread.CurrentNice()));
            return inner.WriteAsync(records, cancellationToken);
        }

        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery query, CancellationToken cancellationToken) => inner.ReadAsync(query, cancellationToken);

        public Task<long> CountAsync(CancellationToken cancellationToken) => inner.CountAsync(cancellationToken);
    }

    [Theory]
    [InlineData(10)]
    [InlineData(0)]
    public async Task The_store_is_written_on_the_writer_s_own_thread_below_the_request_path_s_priority(int backgroundNice)
    {
        // the request path's threads (the pool's) keep the process's priority; the writer's batches of rows must not take a
        // pool thread, and on Linux they run BackgroundNice lower so a request wins the CPU over them
        var store = new ThreadNotingStore(new SqliteStore(Path.Combine(_dir, "t.db")));
        var processNice = BackgroundThread.CurrentNice();
        var options = Options();
        options.BackgroundNice = backgroundNice;
        await using (var w = new LedgerWriter(store, options, NullLogger<LedgerWriter>.Instance))
        {
            w.Start();
            for (var i = 0; i < 300; i++) w.Enqueue(Record(i));
        }
        Assert.Equal(300, await store.CountAsync(default));
        Assert.NotEmpty(store.Writes);
        Assert.All(store.Writes, t => Assert.Equal(("bursar-ledger-writer", false), (t.Name, t.Pool)));
        if (OperatingSystem.IsLinux() && processNice is { } nice)
            Assert.All(store.Writes, t => Assert.Equal(Math.Min(19, nice + backgroundNice), t.Nice));
    }

    [Fact]
    public void A_background_nice_outside_0_to_19_is_refused_naming_the_setting()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LedgerWriterOptions { BackgroundNice = 20 }.Validate());
        Assert.Contains("Bursar:Ledger:BackgroundNice", e.Message);
    }

    private sealed class DiesMidBatch(ILedgerStore inner, int commitBeforeDying) : ILedgerStore
    {
        public async Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken ct)
        {
            await inner.WriteAsync(records.Take(commitBeforeDying).ToArray(), ct);
            throw new IOException("writer killed mid-batch");
        }

        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery q, CancellationToken ct) => inner.ReadAsync(q, ct);
        public Task<long> CountAsync(CancellationToken ct) => inner.CountAsync(ct);
    }

    [Fact]
    public async Task A_writer_killed_mid_batch_loses_nothing_and_duplicates_nothing_after_restart()
    {
        var store = new SqliteStore(Path.Combine(_dir, "b.db"));
        var dying = new DiesMidBatch(store, commitBeforeDying: 20);
        var w1 = new LedgerWriter(dying, Options(batch: 50), NullLogger<LedgerWriter>.Instance);
        w1.Start();
        for (var i = 0; i < 200; i++) w1.Enqueue(Record(i));
        await w1.DisposeAsync();
        Assert.True(await store.CountAsync(default) < 200, "the dying store should have lost the tail of its batches");
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl"));

        // restart on the same spool with a healthy store
        await using (var w2 = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
        {
            var replayed = await w2.ReplaySpoolAsync(default);
            Assert.True(replayed > 0);
        }
        Assert.Equal(200, await store.CountAsync(default));
        var ids = (await store.ReadAsync(new LedgerQuery { Limit = 1000 }, default)).Select(r => r.Id).ToArray();
        Assert.Equal(200, ids.Distinct().Count());
    }

    private sealed class OutageStore(ILedgerStore inner) : ILedgerStore
    {
        public volatile bool Down = true;
        public int Failures;

        public Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken ct)
        {
            if (Down)
            {
                Interlocked.Increment(ref Failures);
                throw new Microsoft.Data.Sqlite.SqliteException("database is locked", 5);
            }
            return inner.WriteAsync(records, ct);
        }

        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery q, CancellationToken ct) => inner.ReadAsync(q, ct);
        public Task<long> CountAsync(CancellationToken ct) => inner.CountAsync(ct);
    }

    [Fact]
    public async Task Records_written_during_a_store_outage_are_replayed_when_it_returns()
    {
        var store = new SqliteStore(Path.Combine(_dir, "c.db"));
        var outage = new OutageStore(store);
        await using var w = new LedgerWriter(outage, Options(batch: 10), NullLogger<LedgerWriter>.Instance);
        w.Start();
        for (var i = 0; i < 100; i++) w.Enqueue(Record(i));
        await Eventually(() => Task.FromResult(outage.Failures > 0), "the store to fail");
        Assert.Equal(0, await store.CountAsync(default));
        outage.Down = false;
        w.Enqueue(Record(100)); // wakes the loop, which replays the spool after its batch
        await Eventually(async () => await store.CountAsync(default) == 101, "all records after recovery");
        Assert.True(w.StoreFailures > 0);
    }

    private sealed class BlockedStore(ILedgerStore inner) : ILedgerStore
    {
        public readonly TaskCompletionSource Gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>How many records each write let through held, in order.</summary>
        public readonly System.Collections.Concurrent.ConcurrentQueue<int> Sizes = new();

        public async Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken ct)
        {
            await Gate.Task;
            Sizes.Enqueue(records.Count);
            await inner.WriteAsync(records, ct);
        }

        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery q, CancellationToken ct) => inner.ReadAsync(q, ct);
        public Task<long> CountAsync(CancellationToken ct) => inner.CountAsync(ct);
    }

    [Fact]
    public async Task A_full_queue_spools_to_disk_instead_of_dropping_or_blocking()
    {
        var store = new SqliteStore(Path.Combine(_dir, "d.db"));
        var blocked = new BlockedStore(store);
        var w = new LedgerWriter(blocked, Options(capacity: 4, batch: 2), NullLogger<LedgerWriter>.Instance);
        w.Start();
        for (var i = 0; i < 100; i++) w.Enqueue(Record(i)); // never blocks
        Assert.True(w.Spooled > 50, $"spooled {w.Spooled}");
        blocked.Gate.SetResult();
        await w.DisposeAsync();
        await using (var again = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
            await again.ReplaySpoolAsync(default);
        Assert.Equal(100, await store.CountAsync(default));
    }

    [Fact]
    public async Task A_segment_a_full_queue_overflowed_is_replayed_in_batches_never_all_at_once()
    {
        var store = new SqliteStore(Path.Combine(_dir, "chunks.db"));
        var noting = new BlockedStore(store);
        await using var w = new LedgerWriter(noting, Options(capacity: 4, batch: 16), NullLogger<LedgerWriter>.Instance);
        w.Start();
        for (var i = 0; i < 500; i++) w.Enqueue(Record(i));
        Assert.True(w.Spooled > 400, $"spooled {w.Spooled}");
        noting.Gate.SetResult();
        await w.FlushAsync().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(500, await store.CountAsync(default)); // each once: what the queue held and the journal replays overlap
        Assert.True(noting.Sizes.Max() <= 16, $"a write of {noting.Sizes.Max()} records: the replay read the whole segment into one batch");
        Assert.True(noting.Sizes.Sum() >= 500, string.Join(",", noting.Sizes));
    }

    /// <summary>Notes the ids of every write, in order; fails the write numbered <see cref="FailWrite"/> (from 1); with <see cref="Yield"/>, completes each write asynchronously as PostgreSQL's does.</summary>
    private sealed class RecordingStore(ILedgerStore inner) : ILedgerStore
    {
        public readonly System.Collections.Concurrent.ConcurrentQueue<string[]> Writes = new();
        public volatile int FailWrite;
        public bool Yield;
        private int _calls;

        public async Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken ct)
        {
            if (Yield) await Task.Yield();
            if (Interlocked.Increment(ref _calls) == FailWrite) throw new IOException("the store went away mid-replay");
            Writes.Enqueue(records.Select(r => r.Id).ToArray());
            await inner.WriteAsync(records, ct);
        }

        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery q, CancellationToken ct) => inner.ReadAsync(q, ct);
        public Task<long> CountAsync(CancellationToken ct) => inner.CountAsync(ct);
    }

    /// <summary>
    /// A journal segment left on disk by a process killed mid-append: <paramref name="count"/> whole records, a last line
    /// cut off, then the zeros of the preallocated rest.
    /// </summary>
    private string LeaveJournal(int count)
    {
        var spool = Path.Combine(_dir, "spool");
        Directory.CreateDirectory(spool);
        var path = Path.Combine(spool, "20260101000000000-journal-left.jsonl");
        using var file = File.Create(path);
        for (var i = 0; i < count; i++)
        {
            file.Write(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(Record(i), LedgerJsonContext.Default.LedgerRecord));
            file.WriteByte((byte)'\n');
        }
        file.Write(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(Record(count), LedgerJsonContext.Default.LedgerRecord).AsSpan(0, 40));
        file.Write(new byte[8192]);
        return path;
    }

    private static string[] Ids(int count) => Enumerable.Range(0, count).Select(i => $"rec-{i:D6}").ToArray();

    [Fact]
    public async Task A_journal_left_on_disk_is_replayed_in_writes_of_at_most_MaxBatchSize_each_record_once_and_then_removed()
    {
        var journal = LeaveJournal(1300);
        var store = new SqliteStore(Path.Combine(_dir, "left.db"));
        var recording = new RecordingStore(store);
        await using var w = new LedgerWriter(recording, Options(batch: 500), NullLogger<LedgerWriter>.Instance);
        Assert.Equal(1300, await w.ReplaySpoolAsync(default));
        Assert.Equal([500, 500, 300], recording.Writes.Select(b => b.Length)); // not one write of the whole file
        Assert.Equal(Ids(1300), recording.Writes.SelectMany(b => b)); // each once, in file order; the cut-off last line skipped
        Assert.Equal(1300, w.Written);
        Assert.Equal(1300, await store.CountAsync(default));
        Assert.False(File.Exists(journal));
    }

    [Fact]
    public async Task A_store_failing_part_way_through_a_journal_leaves_the_file_and_a_later_replay_writes_every_record()
    {
        var journal = LeaveJournal(1300);
        var store = new SqliteStore(Path.Combine(_dir, "left-fail.db"));
        var recording = new RecordingStore(store) { FailWrite = 2 };
        await using var w = new LedgerWriter(recording, Options(batch: 500), NullLogger<LedgerWriter>.Instance);
        await Assert.ThrowsAsync<IOException>(() => w.ReplaySpoolAsync(default));
        Assert.True(File.Exists(journal), "the file was removed before all of it was in the store");
        Assert.Equal(500, await store.CountAsync(default)); // the first batch is in
        Assert.Equal(500, w.Written);

        Assert.Equal(1300, await w.ReplaySpoolAsync(default));
        var writes = recording.Writes.ToArray();
        Assert.Equal([500, 500, 500, 300], writes.Select(b => b.Length));
        // the only records written twice are the first batch's, written again by id: the store ignores them
        Assert.Equal(Ids(500).Concat(Ids(1300)), writes.SelectMany(b => b));
        Assert.Equal(1300, await store.CountAsync(default));
        Assert.Equal(1300, (await store.ReadAsync(new LedgerQuery { Limit = 5000 }, default)).Select(r => r.Id).Distinct().Count());
        Assert.False(File.Exists(journal));
    }

    [Fact]
    public async Task The_writer_thread_replays_a_left_journal_batch_by_batch_on_its_own_thread_even_with_an_async_store()
    {
        // the writer's start-up replay blocks on each batch: awaiting a store whose writes complete asynchronously would
        // carry the rest of the file's batches on to a pool thread
        var journal = LeaveJournal(1300);
        var store = new SqliteStore(Path.Combine(_dir, "left-thread.db"));
        var recording = new RecordingStore(store) { Yield = true };
        var noting = new ThreadNotingStore(recording);
        await using (var w = new LedgerWriter(noting, Options(batch: 500), NullLogger<LedgerWriter>.Instance))
        {
            w.Start();
            await Eventually(async () => !File.Exists(journal) && await store.CountAsync(default) == 1300, "the left journal replayed and removed");
        }
        Assert.Equal([500, 500, 300], recording.Writes.Select(b => b.Length));
        Assert.All(noting.Writes, t => Assert.Equal(("bursar-ledger-writer", false), (t.Name, t.Pool)));
    }

    [Fact]
    public async Task Flush_completes_once_every_earlier_record_is_in_the_store_including_those_a_full_queue_left_in_the_journal()
    {
        var store = new SqliteStore(Path.Combine(_dir, "flush.db"));
        var blocked = new BlockedStore(store);
        var options = Options(capacity: 4, batch: 2);
        options.FlushInterval = TimeSpan.FromSeconds(30); // a batch would otherwise wait this long to fill: the flush must cut it short
        await using var w = new LedgerWriter(blocked, options, NullLogger<LedgerWriter>.Instance);
        w.Start();
        for (var i = 0; i < 100; i++) w.Enqueue(Record(i));
        Assert.True(w.Spooled > 50, $"spooled {w.Spooled}");
        var flush = w.FlushAsync();
        await Task.Delay(100);
        Assert.False(flush.IsCompleted, "the flush completed while the store still held every record back");
        blocked.Gate.SetResult();
        await flush.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(100, await store.CountAsync(default)); // read at once: no waiting, no polling
        w.Enqueue(Record(100));
        await w.FlushAsync().WaitAsync(TimeSpan.FromSeconds(20)); // one record, far from a full batch, with a 30 s fill interval
        Assert.Equal(101, await store.CountAsync(default));
    }

    [Fact]
    public async Task Flush_on_a_closed_writer_returns_at_once()
    {
        var store = new SqliteStore(Path.Combine(_dir, "flush-closed.db"));
        var w = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance);
        w.Start();
        w.Enqueue(Record(1));
        await w.DisposeAsync();
        await w.FlushAsync().WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(1, await store.CountAsync(default));
    }

    [Fact]
    public async Task Overflow_spooling_races_safely_with_the_replay_loop()
    {
        // the loop's replay once took in-flight .tmp overflow files for crash leftovers and deleted them mid-write (seen once in CI
        // under load; this test exercises the same interleaving but does not reproduce it reliably)
        var store = new SqliteStore(Path.Combine(_dir, "race.db"));
        var blocked = new BlockedStore(store);
        var w = new LedgerWriter(blocked, Options(capacity: 1, batch: 1), NullLogger<LedgerWriter>.Instance);
        w.Start();
        var writers = Enumerable.Range(0, 4).Select(t => Task.Run(() => { for (var i = 0; i < 250; i++) w.Enqueue(Record(t * 1000 + i)); })).ToArray();
        var replays = Task.Run(async () => { for (var i = 0; i < 50; i++) await w.ReplaySpoolAsync(default); });
        await Task.WhenAll(writers);
        blocked.Gate.SetResult();
        await replays;
        await w.DisposeAsync();
        await using (var again = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
            await again.ReplaySpoolAsync(default);
        Assert.Equal(1000, await store.CountAsync(default));
    }

    [Fact]
    public async Task A_replay_does_not_take_the_journal_of_records_still_queued()
    {
        // the live journal segment holds records the queue has not committed yet: a replay must leave it alone, or a crash
        // right after would lose them
        var store = new SqliteStore(Path.Combine(_dir, "race2.db"));
        var blocked = new BlockedStore(store);
        var w = new LedgerWriter(blocked, Options(capacity: 8, batch: 4), NullLogger<LedgerWriter>.Instance);
        for (var i = 0; i < 3; i++) w.Enqueue(Record(i));
        var journal = Assert.Single(Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl"));
        blocked.Gate.SetResult();
        Assert.Equal(0, await w.ReplaySpoolAsync(default));
        Assert.True(File.Exists(journal));
        Assert.Equal(3, LedgerWriter.ReadSpoolFile(journal).Count);
        w.Start();
        await w.DisposeAsync();
        Assert.Equal(3, await store.CountAsync(default));
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir, "spool")));
    }

    [Fact]
    public async Task Every_record_is_in_the_journal_before_the_append_returns_so_a_killed_process_loses_none()
    {
        // the writer loop never runs (the process "dies" before the store sees anything): every appended record must
        // already be in a journal file that the next start replays
        var store = new SqliteStore(Path.Combine(_dir, "killed.db"));
        var w1 = new LedgerWriter(store, Options(capacity: 16), NullLogger<LedgerWriter>.Instance);
        for (var i = 0; i < 100; i++) await w1.AppendAsync(Record(i)); // 84 of them overflow the queue of 16
        var onDisk = Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl").Sum(f => LedgerWriter.ReadSpoolFile(f).Count);
        Assert.Equal(100, onDisk);
        Assert.Equal(84, w1.Spooled);
        // no DisposeAsync: a kill -9 runs no cleanup. A new writer on the same folder replays all of it
        await using (var w2 = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
            Assert.Equal(100, await w2.ReplaySpoolAsync(default));
        Assert.Equal(100, await store.CountAsync(default));
    }

    [Fact]
    public async Task With_fsync_always_an_append_completes_after_a_group_fsync()
    {
        var store = new SqliteStore(Path.Combine(_dir, "always.db"));
        var options = Options();
        options.Fsync = LedgerFsync.Always;
        await using var w = new LedgerWriter(store, options, NullLogger<LedgerWriter>.Instance);
        w.Start();
        var appends = Enumerable.Range(0, 200).Select(i => Task.Run(async () => await w.AppendAsync(Record(i)))).ToArray();
        await Task.WhenAll(appends).WaitAsync(TimeSpan.FromSeconds(30));
        await Eventually(async () => await store.CountAsync(default) == 200, "all records in the store");
    }

    [Fact]
    public async Task A_journal_line_leaves_out_default_fields_and_reads_back_equal_required_fields_included()
    {
        var zero = new LedgerRecord { Id = "rec-zero", Timestamp = default, Dialect = "openai", Outcome = "ok" }; // every other field at its default
        var full = Record(7) with { Cost = 0.000007m, SavingPromptCache = 0.0000012m, Streamed = true, LatencyMs = 12.5, StatusCode = 200 };
        var w = new LedgerWriter(new BlockedStore(new SqliteStore(Path.Combine(_dir, "lines.db"))), Options(), NullLogger<LedgerWriter>.Instance);
        w.Enqueue(zero);
        w.Enqueue(full);
        var journal = Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl").Single();
        var text = System.Text.Encoding.UTF8.GetString(File.ReadAllBytes(journal)).TrimEnd('\0');
        var zeroLine = text.Split('\n')[0];
        Assert.DoesNotContain("input_tokens", zeroLine);   // 0: left out
        Assert.DoesNotContain("priced", zeroLine);         // false: left out
        Assert.Contains("\"timestamp\":", zeroLine);       // required: written even at its default
        var back = LedgerWriter.ReadSpoolFile(journal);
        Assert.Equal([zero, full], back);
        await w.DisposeAsync();
    }

    [Fact]
    public async Task Journal_segments_roll_over_and_are_removed_once_committed()
    {
        var store = new SqliteStore(Path.Combine(_dir, "roll.db"));
        var options = Options(capacity: 4096, batch: 64);
        options.SegmentBytes = 8192; // a few records per segment
        await using (var w = new LedgerWriter(store, options, NullLogger<LedgerWriter>.Instance))
        {
            for (var i = 0; i < 300; i++) w.Enqueue(Record(i));
            Assert.True(Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl").Length > 3, "segments should roll over at 8 KiB");
            w.Start();
            await Eventually(async () => await store.CountAsync(default) == 300, "all records in the store");
            await Eventually(() => Task.FromResult(Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl").Length <= 1), "committed segments removed");
        }
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir, "spool")));
    }

    [Fact]
    public void Options_are_validated_with_the_configuration_name()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LedgerWriterOptions { FsyncInterval = TimeSpan.Zero }.Validate());
        Assert.Contains("Bursar:Ledger:FsyncInterval", e.Message);
    }

    [Fact]
    public async Task A_journal_cut_off_by_a_crash_is_recovered_at_the_next_start()
    {
        var spool = Path.Combine(_dir, "spool");
        Directory.CreateDirectory(spool);
        var good = System.Text.Json.JsonSerializer.Serialize(Record(5), LedgerJsonContext.Default.LedgerRecord);
        File.WriteAllText(Path.Combine(spool, "20260101000000000-batch-x.tmp"), good + "\n" + good[..30]);
        var store = new SqliteStore(Path.Combine(_dir, "crash.db"));
        await using (var w = new LedgerWriter(store, Options(), NullLogger<LedgerWriter>.Instance))
            Assert.Equal(1, await w.ReplaySpoolAsync(default));
        Assert.Equal(1, await store.CountAsync(default));
        Assert.Empty(Directory.GetFiles(spool));
    }

    [Fact]
    public void A_spool_line_cut_off_by_a_crash_is_skipped_and_the_rest_is_kept()
    {
        Directory.CreateDirectory(_dir);
        var path = Path.Combine(_dir, "cut.jsonl");
        var good = System.Text.Json.JsonSerializer.Serialize(Record(1), LedgerJsonContext.Default.LedgerRecord);
        File.WriteAllText(path, good + "\n" + good.Replace("rec-000001", "rec-000002") + "\n" + good[..20]);
        var records = LedgerWriter.ReadSpoolFile(path);
        Assert.Equal(["rec-000001", "rec-000002"], records.Select(r => r.Id));
    }

    [Fact]
    public async Task A_journal_segment_is_preallocated_mapped_and_readable_while_the_writer_still_holds_it()
    {
        // the store is never started: every record is only in the journal, as after a kill -9 before the store took it
        var store = new SqliteStore(Path.Combine(_dir, "m.db"));
        var options = Options();
        options.SegmentBytes = 64 * 1024;
        await using var w = new LedgerWriter(store, options, NullLogger<LedgerWriter>.Instance);
        for (var i = 0; i < 40; i++) await w.AppendAsync(Record(i) with { ErrorMessage = "ünïcødé 名前 " + new string('x', i) });
        var file = Assert.Single(Directory.GetFiles(options.SpoolDirectory, "*.jsonl"));
        Assert.Equal(64 * 1024, new FileInfo(file).Length); // preallocated: a full disk fails at open, not on a mapped page
        var onDisk = LedgerWriter.ReadSpoolFile(file);
        Assert.Equal(Enumerable.Range(0, 40).Select(i => $"rec-{i:D6}"), onDisk.Select(r => r.Id));
        Assert.Equal("ünïcødé 名前 xxx", onDisk[3].ErrorMessage);
        var bytes = File.ReadAllBytes(file);
        var end = Array.IndexOf(bytes, (byte)0);
        Assert.True(end > 0 && bytes.AsSpan(end).IndexOfAnyExcept((byte)0) < 0, "the unused rest of the segment is zeros");
    }

    [Fact]
    public async Task A_record_larger_than_a_segment_gets_a_segment_of_its_own()
    {
        var store = new SqliteStore(Path.Combine(_dir, "big.db"));
        var options = Options();
        options.SegmentBytes = 4096;
        await using (var w = new LedgerWriter(store, options, NullLogger<LedgerWriter>.Instance))
        {
            await w.AppendAsync(Record(1));
            await w.AppendAsync(Record(2) with { ErrorMessage = new string('e', 20_000) });
            await w.AppendAsync(Record(3));
            var files = Directory.GetFiles(options.SpoolDirectory, "*.jsonl");
            Assert.Equal(["rec-000001", "rec-000002", "rec-000003"], files.SelectMany(LedgerWriter.ReadSpoolFile).Select(r => r.Id).Order());
            w.Start();
        }
        Assert.Equal(3, await store.CountAsync(default));
        Assert.Equal(20_000, (await store.ReadAsync(new LedgerQuery { Limit = 10 }, default)).Single(r => r.Id == "rec-000002").ErrorMessage!.Length);
    }

    [Fact]
    public async Task Every_column_round_trips_through_the_store_exactly_and_a_second_write_changes_nothing()
    {
        var store = new SqliteStore(Path.Combine(_dir, "cols.db"));
        var full = new LedgerRecord
        {
            Id = "full", Timestamp = new DateTimeOffset(2026, 12, 2, 3, 4, 5, 678, TimeSpan.FromHours(2)).AddTicks(9),
            KeyId = "k", Team = "チーム", Customer = "Ünïcode \"quoted\" ' ;--", Feature = "f", Route = "r", Task = "t", Template = "tp", RunId = "run",
            Dialect = "anthropic", Provider = "p", RequestedModel = "a", ServedModel = "b", RoutingReason = "why", RunEndReason = "end",
            VolatilePrefix = "vp", PrefixHash = "ph", PrefixTokens = long.MaxValue, Streamed = true, Batch = true,
            InputTokens = 1, CacheReadTokens = 2, CacheWrite5mTokens = 3, CacheWrite1hTokens = 4, OutputTokens = 5, ReasoningTokens = 6, UsageEstimated = true,
            Priced = true, Cost = 79228162514264337593543950335m, CounterfactualCost = 0.0000000000000000000000000001m,
            SavingRouting = -1.5m, SavingResponseCache = 0.1m, SavingPromptCache = 0.2m, SavingBatch = 0.3m, SavingCompaction = 0.4m, SavingOutputCap = 0.5m,
            ReportedCost = 1.000000000000000000000000001m, LatencyMs = 12.5, TimeToFirstTokenMs = 0.25,
            Outcome = "ok", StatusCode = 200, ErrorType = "e", ErrorMessage = "line1\nline2 😀 𠀀", FinishReason = "stop", UpstreamRequestId = "u",
        };
        var sparse = new LedgerRecord { Id = "sparse", Timestamp = DateTimeOffset.FromUnixTimeMilliseconds(1), Dialect = "openai", Outcome = "refused" };
        await store.WriteAsync([full, sparse], default);
        await store.WriteAsync([full, sparse], default); // replayed: INSERT OR IGNORE, not a second row
        var back = await store.ReadAsync(new LedgerQuery { Limit = 10 }, default);
        Assert.Equal(2, back.Count);
        Assert.Equal(sparse, back.Single(r => r.Id == "sparse"));
        // the store keeps millisecond time in UTC; everything else exactly
        Assert.Equal(full with { Timestamp = DateTimeOffset.FromUnixTimeMilliseconds(full.Timestamp.ToUnixTimeMilliseconds()) }, back.Single(r => r.Id == "full"));
    }
}
