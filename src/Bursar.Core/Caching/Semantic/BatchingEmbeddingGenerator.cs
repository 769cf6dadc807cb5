using System.Threading.Channels;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Caching.Semantic;

/// <summary>Options of <see cref="BatchingEmbeddingGenerator"/> (<c>Bursar:SemanticCache:Batching</c>).</summary>
public sealed class EmbeddingBatchingOptions
{
    /// <summary>
    /// Most texts embedded in one run of the inner generator (one ONNX run, padded to its longest text). Default 1: batching off,
    /// each request goes straight to the encoder, because on the 2-core reference machine one sentence per core in parallel embedded
    /// more per second than batches did at every concurrency measured (bench/RESULTS.md, <c>embed-throughput</c>). 8 turns it on
    /// (machines with more cores than concurrent lookups' runs can use, or a GPU encoder).
    /// </summary>
    public int MaxBatchSize { get; set; } = 1;

    /// <summary>
    /// How long a batch that is not full waits for more requests before it runs, when a runner is free. Default zero: a request
    /// that finds a free runner runs at once, and batches form from the requests that arrive while every runner is busy (on a
    /// CPU, one sentence per core in parallel beats one padded batch on one core; batches pay off only once the cores are taken:
    /// bench/RESULTS.md). A few milliseconds trade a lone lookup's latency for fuller batches.
    /// </summary>
    public TimeSpan MaxWait { get; set; } = TimeSpan.Zero;

    /// <summary>Batches run by the inner generator at the same time. Default the machine's cores (each ONNX run uses one thread).</summary>
    public int MaxConcurrentBatches { get; set; } = Environment.ProcessorCount;

    public void Validate()
    {
        if (MaxBatchSize < 1) throw new InvalidOperationException($"Bursar:SemanticCache:Batching:MaxBatchSize must be at least 1, not {MaxBatchSize}.");
        if (MaxWait < TimeSpan.Zero || MaxWait > TimeSpan.FromSeconds(1)) throw new InvalidOperationException($"Bursar:SemanticCache:Batching:MaxWait must be between 00:00:00 and 00:00:01, not {MaxWait}.");
        if (MaxConcurrentBatches < 1) throw new InvalidOperationException($"Bursar:SemanticCache:Batching:MaxConcurrentBatches must be at least 1, not {MaxConcurrentBatches}.");
    }
}

/// <summary>
/// Gathers the embedding requests of concurrent callers (semantic-cache lookups and adds, one question each) into one call of the
/// inner generator, so an ONNX encoder runs one padded batch instead of one sentence per run. A batch runs as soon as a runner
/// is free, with what has queued (up to <see cref="EmbeddingBatchingOptions.MaxBatchSize"/> texts; when the runner was idle, after
/// waiting up to <see cref="EmbeddingBatchingOptions.MaxWait"/> for company).
/// Each caller gets the vectors of its own texts, in order. A caller that cancels leaves its batch (the others still get theirs);
/// an inner generator that throws faults the requests of that batch only. Requests with <see cref="EmbeddingGenerationOptions"/>
/// are passed straight through (a batch has one set of options).
/// </summary>
public sealed class BatchingEmbeddingGenerator : DelegatingEmbeddingGenerator<string, Embedding<float>>
{
    private sealed class Pending(IReadOnlyList<string> texts, CancellationToken ct)
    {
        public readonly IReadOnlyList<string> Texts = texts;
        public readonly CancellationToken Token = ct;
        public readonly TaskCompletionSource<GeneratedEmbeddings<Embedding<float>>> Result = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Registration;
    }

    private readonly EmbeddingBatchingOptions _options;
    private readonly TimeProvider _time;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly SemaphoreSlim _running;
    private readonly CancellationTokenSource _stop;
    private readonly CancellationToken _stopToken;
    private readonly Task _loop;
    private long _batches, _texts;

    public BatchingEmbeddingGenerator(IEmbeddingGenerator<string, Embedding<float>> inner, EmbeddingBatchingOptions? options = null, TimeProvider? time = null) : base(inner)
    {
        _options = options ?? new EmbeddingBatchingOptions();
        _options.Validate();
        _time = time ?? TimeProvider.System;
        _running = new SemaphoreSlim(_options.MaxConcurrentBatches, _options.MaxConcurrentBatches);
        _stop = new CancellationTokenSource();
        _stopToken = _stop.Token;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Runs of the inner generator so far, and the texts they embedded (texts / batches is the mean batch size).</summary>
    public long Batches => Interlocked.Read(ref _batches);
    public long Texts => Interlocked.Read(ref _texts);

    public override Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<GeneratedEmbeddings<Embedding<float>>>(cancellationToken);
        var texts = values as IReadOnlyList<string> ?? values.ToArray();
        if (texts.Count == 0 || options is not null || _options.MaxBatchSize == 1) return base.GenerateAsync(texts, options, cancellationToken);
        var p = new Pending(texts, cancellationToken);
        if (cancellationToken.CanBeCanceled)
            p.Registration = cancellationToken.Register(static s => { var q = (Pending)s!; q.Result.TrySetCanceled(q.Token); }, p);
        if (!_queue.Writer.TryWrite(p))
        {
            p.Registration.Dispose();
            return Task.FromException<GeneratedEmbeddings<Embedding<float>>>(new ObjectDisposedException(nameof(BatchingEmbeddingGenerator)));
        }
        return p.Result.Task;
    }

    private async Task LoopAsync()
    {
        var reader = _queue.Reader;
        var batch = new List<Pending>();
        Pending? carried = null;
        var token = _stopToken;
        try
        {
            while (true)
            {
                if (carried is null)
                {
                    if (!await reader.WaitToReadAsync(token).ConfigureAwait(false)) return;
                    if (!reader.TryRead(out carried)) continue;
                }
                batch.Add(carried);
                var count = carried.Texts.Count;
                carried = null;
                // a free runner first: while every runner is busy, requests queue up and join this batch
                var idle = _running.Wait(0);
                if (!idle) await _running.WaitAsync(token).ConfigureAwait(false);
                // fill the batch with what is queued; only when the runners were idle, wait up to MaxWait for company
                CancellationTokenSource? waited = null;
                try
                {
                    while (count < _options.MaxBatchSize)
                    {
                        if (reader.TryRead(out var next))
                        {
                            if (count + next.Texts.Count > _options.MaxBatchSize) { carried = next; break; } // starts the next batch
                            batch.Add(next);
                            count += next.Texts.Count;
                            continue;
                        }
                        if (!idle || _options.MaxWait <= TimeSpan.Zero) break;
                        // (Dispose completes the queue, which ends this wait too)
                        waited ??= new CancellationTokenSource(_options.MaxWait, _time);
                        if (waited.IsCancellationRequested) break;
                        try
                        {
                            if (!await reader.WaitToReadAsync(waited.Token).ConfigureAwait(false)) break;
                        }
                        catch (OperationCanceledException) when (waited.IsCancellationRequested)
                        {
                            break; // waited long enough
                        }
                    }
                }
                finally
                {
                    waited?.Dispose();
                }
                token.ThrowIfCancellationRequested(); // disposed while this batch gathered: it is failed, not run
                var work = batch.ToArray();
                batch.Clear();
                _ = Task.Run(() => RunAsync(work), CancellationToken.None);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // disposed: whatever is still queued is failed below
        }
        finally
        {
            var gone = new ObjectDisposedException(nameof(BatchingEmbeddingGenerator));
            foreach (var p in batch) p.Result.TrySetException(gone);
            carried?.Result.TrySetException(gone);
            while (reader.TryRead(out var p)) p.Result.TrySetException(gone);
        }
    }

    private async Task RunAsync(Pending[] work)
    {
        try
        {
            // callers that cancelled while queued are left out
            var live = work.Where(p => !p.Result.Task.IsCompleted).ToArray();
            if (live.Length == 0) return;
            var texts = new List<string>(live.Sum(p => p.Texts.Count));
            foreach (var p in live) texts.AddRange(p.Texts);
            GeneratedEmbeddings<Embedding<float>> all;
            try
            {
                all = await base.GenerateAsync(texts, null, _stopToken).ConfigureAwait(false);
                if (all.Count != texts.Count) throw new InvalidOperationException($"The embedding generator returned {all.Count} embeddings for {texts.Count} texts.");
            }
            catch (Exception e)
            {
                foreach (var p in live) p.Result.TrySetException(e);
                return;
            }
            Interlocked.Increment(ref _batches);
            Interlocked.Add(ref _texts, texts.Count);
            var offset = 0;
            foreach (var p in live)
            {
                var mine = new List<Embedding<float>>(p.Texts.Count);
                for (var i = 0; i < p.Texts.Count; i++) mine.Add(all[offset + i]);
                offset += p.Texts.Count;
                p.Result.TrySetResult(new GeneratedEmbeddings<Embedding<float>>(mine) { Usage = null });
            }
        }
        finally
        {
            foreach (var p in work) p.Registration.Dispose();
            _running.Release();
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Cancel(); // before the queue completes, so a batch woken by the completion sees it
            _queue.Writer.TryComplete();
            try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
            // _stop and _running stay undisposed: a batch still running may read the token and release its runner
        }
        base.Dispose(disposing);
    }
}
