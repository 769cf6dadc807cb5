using System.Collections.Concurrent;
using Bursar.Core.Caching.Semantic;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests;

/// <summary>
/// The embedding batcher: concurrent requests share one run of the inner generator, each caller gets its own vectors (equal to
/// one-by-one), a caller that cancels leaves its batch, and a failing run faults only the requests of that batch. A
/// <see cref="FakeTimeProvider"/> that is never advanced keeps MaxWait from ever elapsing, so batch contents are deterministic.
/// </summary>
public sealed class BatchingEmbeddingGeneratorTests
{
    /// <summary>A deterministic inner generator: each text's vector comes from its characters; records every run; can be held at a gate.</summary>
    private sealed class Recording : IEmbeddingGenerator<string, Embedding<float>>
    {
        public readonly ConcurrentQueue<string[]> Runs = new();
        public TaskCompletionSource? Gate;
        public TaskCompletionSource Entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string? FailOn;

        public static float[] VectorOf(string text) => [text.Length, text.Sum(c => c) % 97, text.Length == 0 ? 0 : text[0]];

        public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
        {
            var texts = values.ToArray();
            Runs.Enqueue(texts);
            Entered.TrySetResult();
            if (Gate is { } gate) await gate.Task.ConfigureAwait(false);
            if (FailOn is { } f && texts.Contains(f)) throw new InvalidOperationException($"encoder failed on '{f}'");
            return new GeneratedEmbeddings<Embedding<float>>(texts.Select(t => new Embedding<float>(VectorOf(t))));
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;
        public void Dispose() { }
    }

    private static float[] One(GeneratedEmbeddings<Embedding<float>> e) => Assert.Single(e).Vector.ToArray();

    [Fact]
    public async Task Concurrent_requests_share_one_run_and_each_caller_gets_the_vectors_of_its_own_texts()
    {
        var inner = new Recording();
        using var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 5, MaxWait = TimeSpan.FromSeconds(1) }, new FakeTimeProvider());
        string[] questions = ["How do I reset my password?", "What is the capital of France?", "Why is the sky blue?"];
        var singles = questions.Select(q => batching.GenerateAsync([q])).ToArray();
        var pair = batching.GenerateAsync(["Is 7 prime?", "Is 9 prime?"]);
        await Task.WhenAll(singles.Append(pair));

        // five texts, one run (the batch filled before MaxWait, which never elapses here)
        var run = Assert.Single(inner.Runs);
        Assert.Equal(5, run.Length);
        Assert.Equal(1, batching.Batches);
        Assert.Equal(5, batching.Texts);
        // each result is what one-by-one would give
        for (var i = 0; i < questions.Length; i++) Assert.Equal(Recording.VectorOf(questions[i]), One(await singles[i]));
        var two = await pair;
        Assert.Equal(2, two.Count);
        Assert.Equal(Recording.VectorOf("Is 7 prime?"), two[0].Vector.ToArray());
        Assert.Equal(Recording.VectorOf("Is 9 prime?"), two[1].Vector.ToArray());
    }

    [Fact]
    public async Task Requests_that_arrive_while_a_run_is_busy_go_together_into_the_next_run()
    {
        var inner = new Recording { Gate = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        using var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 16, MaxWait = TimeSpan.Zero, MaxConcurrentBatches = 1 }, new FakeTimeProvider());
        var first = batching.GenerateAsync(["first"]);
        await inner.Entered.Task; // the first question runs alone (MaxWait zero: no waiting for company)
        var queued = Enumerable.Range(0, 6).Select(i => batching.GenerateAsync([$"question {i}"])).ToArray();
        inner.Gate.SetResult();
        await Task.WhenAll(queued.Append(first));

        Assert.Equal([["first"], Enumerable.Range(0, 6).Select(i => $"question {i}").ToArray()], inner.Runs.ToArray());
        for (var i = 0; i < 6; i++) Assert.Equal(Recording.VectorOf($"question {i}"), One(await queued[i]));
    }

    [Fact]
    public async Task A_batch_never_holds_more_than_the_max_and_a_request_is_never_split()
    {
        var inner = new Recording();
        using var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 3, MaxWait = TimeSpan.FromSeconds(1), MaxConcurrentBatches = 1 }, new FakeTimeProvider());
        var a = batching.GenerateAsync(["a1", "a2"]);
        var b = batching.GenerateAsync(["b1", "b2"]); // does not fit beside a: starts the next batch
        var c = batching.GenerateAsync(["c1"]);
        await Task.WhenAll(a, b);
        Assert.Equal(2, (await a).Count);
        Assert.Equal(2, (await b).Count);
        await c;
        Assert.Equal([["a1", "a2"], ["b1", "b2", "c1"]], inner.Runs.ToArray());
    }

    [Fact]
    public async Task A_caller_that_cancels_leaves_its_batch_and_the_others_still_get_their_vectors()
    {
        var inner = new Recording { Gate = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        using var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 8, MaxWait = TimeSpan.Zero, MaxConcurrentBatches = 1 }, new FakeTimeProvider());
        using var whileRunning = new CancellationTokenSource();
        var running = batching.GenerateAsync(["running"], cancellationToken: whileRunning.Token);
        await inner.Entered.Task;
        using var whileQueued = new CancellationTokenSource();
        var cancelled = batching.GenerateAsync(["gives up"], cancellationToken: whileQueued.Token);
        var kept = batching.GenerateAsync(["stays"]);
        whileQueued.Cancel();
        whileRunning.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running); // at once, not when the run ends
        inner.Gate.SetResult();
        Assert.Equal(Recording.VectorOf("stays"), One(await kept));
        // the request cancelled while queued was not embedded at all
        Assert.Equal([["running"], ["stays"]], inner.Runs.ToArray());
        // an already-cancelled token never reaches the queue
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => batching.GenerateAsync(["late"], cancellationToken: whileQueued.Token));
        Assert.Equal(2, inner.Runs.Count);
    }

    [Fact]
    public async Task A_failing_inner_generator_faults_only_the_requests_of_its_batch()
    {
        var inner = new Recording { FailOn = "boom" };
        using var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 2, MaxWait = TimeSpan.FromSeconds(1) }, new FakeTimeProvider());
        var boom = batching.GenerateAsync(["boom"]);
        var neighbour = batching.GenerateAsync(["same batch"]);
        var e1 = await Assert.ThrowsAsync<InvalidOperationException>(() => boom);
        var e2 = await Assert.ThrowsAsync<InvalidOperationException>(() => neighbour);
        Assert.Contains("boom", e1.Message);
        Assert.Same(e1, e2);
        // the next batch is not affected
        var x = batching.GenerateAsync(["x"]);
        var y = batching.GenerateAsync(["y"]);
        Assert.Equal(Recording.VectorOf("x"), One(await x));
        Assert.Equal(Recording.VectorOf("y"), One(await y));
        Assert.Equal([["boom", "same batch"], ["x", "y"]], inner.Runs.ToArray());
    }

    [Fact]
    public async Task Disposing_fails_what_is_still_queued_and_refuses_new_requests()
    {
        var inner = new Recording();
        var batching = new BatchingEmbeddingGenerator(inner, new EmbeddingBatchingOptions { MaxBatchSize = 8, MaxWait = TimeSpan.FromSeconds(1) }, new FakeTimeProvider());
        var waiting = batching.GenerateAsync(["waits for company that never comes"]);
        batching.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => batching.GenerateAsync(["after"]));
        Assert.Empty(inner.Runs);
    }

    [Theory]
    [InlineData(0, 1, 1, "MaxBatchSize")]
    [InlineData(4, -1, 1, "MaxWait")]
    [InlineData(4, 2000, 1, "MaxWait")]
    [InlineData(4, 1, 0, "MaxConcurrentBatches")]
    public void Options_out_of_range_are_refused_naming_the_key(int maxBatch, int waitMs, int concurrent, string key)
    {
        var o = new EmbeddingBatchingOptions { MaxBatchSize = maxBatch, MaxWait = TimeSpan.FromMilliseconds(waitMs), MaxConcurrentBatches = concurrent };
        var e = Assert.Throws<InvalidOperationException>(o.Validate);
        Assert.Contains($"Bursar:SemanticCache:Batching:{key}", e.Message);
        Assert.Throws<InvalidOperationException>(() => new SemanticCacheOptions { Batching = o }.Validate());
    }
}
