using System.Numerics.Tensors;
using Bursar.Core.Caching.Semantic;

namespace Bursar.Core.Tests;

public sealed class SemanticCacheTests
{
    private static readonly HashedNGramEmbeddingGenerator Generator = new();

    private static float Cos(string a, string b) => TensorPrimitives.Dot(Generator.Embed(a), Generator.Embed(b));

    [Fact]
    public void Paraphrases_score_higher_than_unrelated_questions_and_identical_text_scores_one()
    {
        Assert.Equal(1f, Cos("How do I reset my password?", "how do I reset my password"), 3);
        Assert.True(Cos("How do I reset my password?", "How can I reset my password?") > Cos("How do I reset my password?", "What is the capital of France?") + 0.3f);
        Assert.Equal(1f, TensorPrimitives.Norm(Generator.Embed("anything at all")), 3);
    }

    [Theory]
    [InlineData("Flights to Paris on Monday", "Flights to Rome on Monday", "named entities differ")]
    [InlineData("Is 7 a prime number?", "Is 9 a prime number?", "numbers differ")]
    [InlineData("Should I take the job?", "Should I not take the job?", "negation differs")]
    // regression: the numbers were compared as sets, so a salt holding both digits ({7, 9, 3}) let the first through (a flaky gateway test
    // found it); they are now compared in order, which also stops the second
    [InlineData("What is the monthly price of plan 7 in region 3a9f7c?", "What is the monthly price of plan 9 in region 3a9f7c?", "numbers differ")]
    [InlineData("Move 2 boxes from room 5 to room 5", "Move 5 boxes from room 2 to room 5", "numbers differ")]
    [InlineData("What are the pros and cons of learning C++ first?", "What are the pros and cons of learning C# first?", "symbols differ")]
    [InlineData("What does 时尚 mean?", "What does 心中 mean?", "symbols differ")]
    [InlineData("Why did the committee approve the plan?", "Did the committee approve the plan?", "question differs")]
    [InlineData("Which questions belong to human behavior and not to human nature?", "Which questions belong to human nature and not to human behavior?", "word order differs")]
    [InlineData("How can I minimize the cost of shipping?", "How can I maximize the cost of shipping?", "opposites")]
    public void Guards_reject_lookalikes_that_ask_different_things(string a, string b, string reason)
    {
        Assert.False(SemanticGuards.Compatible(a, b, out var why));
        Assert.Equal(reason, why);
    }

    [Fact]
    public void Lookalikes_score_above_the_gateway_test_threshold_so_only_the_guard_stops_them()
    {
        // the gateway test relies on this pair being caught by the number guard, not by a low score
        Assert.True(Cos("What is the monthly price of plan 7 in region abc123?", "What is the monthly price of plan 9 in region abc123?") >= 0.8f);
    }

    [Fact]
    public void Guards_pass_true_paraphrases()
    {
        Assert.True(SemanticGuards.Compatible("How do I learn Python quickly?", "What is the fastest way to learn Python?", out _));
    }

    private static Bursar.Core.Caching.CachedResponse Answer(int bytes, TimeProvider? time = null) => new(new byte[bytes], "application/json", "m", 0.01m, 1, 1, (time ?? TimeProvider.System).GetUtcNow());

    [Fact]
    public async Task A_huge_question_or_answer_is_neither_looked_up_nor_stored()
    {
        var cache = new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.9f, MaxQuestionChars = 100, MaxEntryBytes = 2048 }, Generator, TimeProvider.System);
        var huge = "How do I reset my password? " + new string('A', 200);
        await cache.AddAsync("p", huge, Answer(10));
        await cache.AddAsync("p", "How do I reset my password?", Answer(4096));
        Assert.Equal(0, cache.Count);
        Assert.Equal("too long", (await cache.LookupAsync("p", huge)).Rejected);
    }

    [Fact]
    public async Task The_entries_together_stay_within_the_byte_bound()
    {
        var cache = new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.9f, MaxEntryBytes = 50_000, MaxTotalBytes = 200_000 }, Generator, TimeProvider.System);
        for (var i = 0; i < 20; i++) await cache.AddAsync("p" + i, $"Question number {i} about passwords?", Answer(40_000));
        Assert.InRange(cache.Bytes, 1, 200_000);
        Assert.InRange(cache.Count, 1, 4); // each partition's bucket tables (64 KB) and answer (40 KB) count
        Assert.NotNull((await cache.LookupAsync("p0", "Question number 0 about passwords?")).Hit); // what was stored still answers
    }

    [Fact]
    public void The_index_finds_the_nearest_entry_within_its_partition_only()
    {
        var index = new VectorIndex<string>(Generator.Dimensions);
        index.Add("tenant-a", Generator.Embed("How do I reset my password?"), "reset");
        index.Add("tenant-a", Generator.Embed("What are your opening hours?"), "hours");
        index.Add("tenant-b", Generator.Embed("How can I reset my password?"), "other tenant");
        var (item, score) = index.Nearest("tenant-a", Generator.Embed("How can I reset my password?"));
        Assert.Equal("reset", item);
        Assert.True(score > 0.5f);
        Assert.Null(index.Nearest("tenant-c", Generator.Embed("x")).Item);
        Assert.Equal(3, index.Count);
    }

    [Fact]
    public void The_sparse_index_finds_near_duplicates_among_many_with_their_exact_cosine()
    {
        var sparse = new SparseVectorIndex<int>(Generator.Dimensions);
        var dense = new VectorIndex<int>(Generator.Dimensions);
        var words = new[] { "price", "plan", "refund", "account", "password", "reset", "invoice", "shipping", "order", "cancel" };
        var rng = new Random(3);
        var texts = new string[2000];
        for (var i = 0; i < texts.Length; i++)
        {
            texts[i] = $"How do I {words[rng.Next(10)]} my {words[rng.Next(10)]} {words[rng.Next(10)]} number {i}?";
            var v = Generator.Embed(texts[i]);
            sparse.Add("p", v, i);
            dense.Add("p", v, i);
        }
        // what the cache is for: a question phrased almost like a stored one gets the same nearest entry and score as a full scan
        foreach (var i in new[] { 7, 420, 1999 })
        {
            var q = Generator.Embed(texts[i].Replace("How do I", "how can i").TrimEnd('?'));
            var (si, ss) = sparse.Nearest("p", q);
            var (di, ds) = dense.Nearest("p", q);
            Assert.Equal(di, si);
            Assert.Equal(ds, ss, 4);
        }
    }

    [Fact]
    public void A_dirty_pooled_buffer_does_not_change_the_answer()
    {
        // regression: the index rented its score buffer from ArrayPool and assumed it came back zeroed
        var sparse = new SparseVectorIndex<int>(Generator.Dimensions);
        for (var i = 0; i < 300; i++) sparse.Add("p", Generator.Embed($"question about topic {i} and item {i * 7}"), i);
        var query = Generator.Embed("question about topic 42 and item 294");
        var clean = sparse.Nearest("p", query);
        var dirty = System.Buffers.ArrayPool<float>.Shared.Rent(300);
        Array.Fill(dirty, 1e9f);
        System.Buffers.ArrayPool<float>.Shared.Return(dirty);
        Assert.Equal(clean, sparse.Nearest("p", query));
        Assert.Equal(42, clean.Item);
    }

    [Fact]
    public void Evaluation_calibrates_on_one_half_and_reports_on_the_other()
    {
        var pairs = SemanticCacheEvaluation.Load(SharedData.Path("semantic_cache", "gptcache_mock_paraphrases.json"));
        Assert.Equal(1998, pairs.Count);
        var result = SemanticCacheEvaluation.Run(pairs, 0.95);
        Assert.Equal(999, result.CalibrationPairs);
        Assert.Equal(999, result.TestPairs);
        Assert.NotNull(result.Chosen);
        Assert.True(result.Test!.Value.Precision >= 0.95, $"held-out precision {result.Test.Value.Precision}");
        Assert.True(result.Test.Value.Recall > 0.3, $"held-out recall {result.Test.Value.Recall}");
        // each guard's effect at the chosen threshold: with every guard on, leaving one out never loses recall
        Assert.Equal(SemanticGuards.Names.Count, result.Guards.Count);
        Assert.All(result.Guards, g => Assert.True(g.TestWithout.Recall >= g.TestWith.Recall));
        Assert.All(result.FalsePositives, fp => Assert.True(fp.Score >= result.Chosen!.Value.Threshold));
        // with no guards nothing is rejected by one
        var bare = SemanticCacheEvaluation.Run(pairs, 0.95, guards: 0);
        Assert.Equal(0, bare.GuardRejections);
        Assert.Empty(bare.GuardedDuplicates);
    }

    [Fact]
    public void Guards_report_every_one_that_rejects_and_can_be_chosen_by_name()
    {
        const string a = "Why is plan 7 not the best for C++ in Paris?", b = "Is plan 9 the worst for C# in Rome?";
        var failing = SemanticGuards.Failing(a, b);
        Assert.Equal(SemanticGuards.Mask(["numbers", "negation", "entities", "symbols", "question", "opposites"]), failing);
        Assert.Equal(1, System.Numerics.BitOperations.PopCount((uint)SemanticGuards.Failing(a, b, firstOnly: true)));
        Assert.True(SemanticGuards.Compatible(a, b, SemanticGuards.Mask(["order"]), out _));
        Assert.False(SemanticGuards.Compatible(a, b, SemanticEncoder.MiniLmGuards, out var why));
        Assert.Equal("numbers differ", why);
        Assert.Throws<ArgumentException>(() => SemanticGuards.Mask(["colour"]));
        // a curly apostrophe is still a negation (a QQP duplicate the guard rejected)
        Assert.True(SemanticGuards.Compatible("Why does not PMMA dissolve in water?", "Why doesn\u2019t PMMA dissolve in water?", out _));
    }

    /// <summary>A dense encoder stand-in: a unit vector per normalized text (lower-cased, no punctuation), every dimension non-zero.</summary>
    private sealed class DenseFake : Microsoft.Extensions.AI.IEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>>
    {
        public static float[] Vector(string text)
        {
            var key = new string(text.ToLowerInvariant().Where(char.IsLetterOrDigit).ToArray());
            var rng = new Random(StringComparer.Ordinal.GetHashCode(key) & 0x7fffffff ^ key.Length);
            var v = Enumerable.Range(0, 384).Select(_ => (float)(rng.NextDouble() + 0.01)).ToArray();
            TensorPrimitives.Divide(v, TensorPrimitives.Norm(v), v);
            return v;
        }

        public Task<Microsoft.Extensions.AI.GeneratedEmbeddings<Microsoft.Extensions.AI.Embedding<float>>> GenerateAsync(IEnumerable<string> values, Microsoft.Extensions.AI.EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default) =>
            Task.FromResult(new Microsoft.Extensions.AI.GeneratedEmbeddings<Microsoft.Extensions.AI.Embedding<float>>(values.Select(v => new Microsoft.Extensions.AI.Embedding<float>(Vector(v)))));

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose() { }
    }

    [Fact]
    public async Task Dense_vectors_are_searched_exactly_past_the_sparse_index_limits()
    {
        // the sparse index skips buckets present in more than 5% of entries: with dense vectors every bucket is, so past 64 entries it found nothing
        var cache = new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.999f }, new DenseFake(), TimeProvider.System);
        Assert.True(cache.Encoder.Dense);
        for (var i = 0; i < 300; i++) await cache.AddAsync("p", $"Question number {i}?", Answer(10));
        Assert.Equal(300, cache.Count);
        var (hit, score, _) = await cache.LookupAsync("p", "question number 123");
        Assert.NotNull(hit);
        Assert.Equal("Question number 123?", hit.Question);
        Assert.Equal(1f, score, 3);
        Assert.True(cache.Bytes > 300 * 384 * 4, $"{cache.Bytes}");
        var other = new VectorIndex<int>(384);
        var cost = other.CostOf("q", DenseFake.Vector("x"));
        other.Add("q", DenseFake.Vector("x"), 1);
        Assert.InRange(other.Bytes, 1, cost);
    }

    [Fact]
    public async Task An_encoder_that_did_not_load_turns_lookups_and_adds_off()
    {
        var cache = new SemanticResponseCache(new SemanticCacheOptions(), () => SemanticEncoder.Disabled("minilm", "model not found"), TimeProvider.System);
        await cache.AddAsync("p", "How do I reset my password?", Answer(10));
        Assert.Equal(0, cache.Count);
        var (hit, _, why) = await cache.LookupAsync("p", "How do I reset my password?");
        Assert.Null(hit);
        Assert.Equal("disabled", why);
    }

    [Fact]
    public async Task An_expired_entry_is_removed_on_lookup_so_a_live_one_behind_it_is_found()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        foreach (var dense in new[] { false, true })
        {
            var cache = dense
                ? new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.5f, Ttl = TimeSpan.FromMinutes(10) }, new DenseFake(), time)
                : new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.5f, Ttl = TimeSpan.FromMinutes(10) }, new HashedNGramEmbeddingGenerator(), time);
            await cache.AddAsync("p", "How do I reset my password?", Answer(10, time));
            var bytesOfOne = cache.Bytes;
            time.Advance(TimeSpan.FromMinutes(11));
            await cache.AddAsync("p", "How do I reset my password please?", Answer(20, time));
            Assert.Equal(2, cache.Count);
            var (hit, _, why) = await cache.LookupAsync("p", "How do I reset my password?");
            // the expired exact match was nearest: it is gone, and the live paraphrase answers
            Assert.Null(why);
            Assert.Equal("How do I reset my password please?", hit?.Question);
            Assert.Equal(1, cache.Count);
            Assert.True(cache.Bytes < bytesOfOne + 64 * 1024, $"{cache.Bytes}");
        }
    }

    [Fact]
    public async Task A_full_cache_drops_its_expired_entries_to_make_room()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var cache = new SemanticResponseCache(new SemanticCacheOptions { MaxEntries = 3, Ttl = TimeSpan.FromMinutes(10) }, new DenseFake(), time);
        for (var i = 0; i < 3; i++) await cache.AddAsync("p", $"Question number {i}?", Answer(10, time));
        await cache.AddAsync("p", "Question number 3?", Answer(10, time));
        Assert.Equal(3, cache.Count); // full of live entries: not added
        time.Advance(TimeSpan.FromMinutes(11));
        await cache.AddAsync("p", "Question number 4?", Answer(10, time));
        Assert.Equal(1, cache.Count); // the three expired ones went, the new one is in
        var (hit, _, _) = await cache.LookupAsync("p", "question number 4");
        Assert.Equal("Question number 4?", hit?.Question);
    }

    [Fact]
    public void Exact_indexes_remove_by_reference_and_never_return_a_removed_item()
    {
        var dense = new VectorIndex<string>(384);
        var sparse = new SparseVectorIndex<string>(Generator.Dimensions);
        string[] items = ["How do I reset my password?", "How can I reset my password?", "What is the capital of France?"];
        foreach (var q in items)
        {
            dense.Add("p", DenseFake.Vector(q), q);
            sparse.Add("p", Generator.Embed(q), q);
        }
        foreach (IVectorIndex<string> index in new IVectorIndex<string>[] { dense, sparse })
        {
            var query = index == dense ? DenseFake.Vector(items[0]) : Generator.Embed(items[0]);
            Assert.Equal(items[0], index.Nearest("p", query).Item);
            Assert.True(index.Remove("p", items[0]));
            Assert.False(index.Remove("p", items[0]));
            Assert.Equal(2, index.Count);
            Assert.NotEqual(items[0], index.Nearest("p", query).Item);
            Assert.Equal(1, index.RemoveWhere(i => i.StartsWith("What", StringComparison.Ordinal)));
            Assert.Equal(items[1], index.Nearest("p", query).Item);
            Assert.Equal(1, index.Count);
        }
    }
}
