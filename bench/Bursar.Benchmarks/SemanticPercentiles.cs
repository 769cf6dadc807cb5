using System.Diagnostics;
using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;

namespace Bursar.Benchmarks;

/// <summary>
/// p50 / p99 of single semantic lookups over a mix of 5,000 different questions (half near-duplicates of stored ones),
/// at 10,000 and 100,000 entries: <c>dotnet run -c Release -- semantic-percentiles</c>.
/// </summary>
public static class SemanticPercentiles
{
    public static void Run()
    {
        string[] words = ["price", "plan", "refund", "account", "password", "reset", "invoice", "shipping", "order", "cancel", "upgrade", "region", "support", "billing", "login", "team",
            "delivery", "discount", "warranty", "address", "email", "export", "report", "limit", "quota", "token", "model", "budget", "key", "usage"];
        foreach (var n in new[] { 10_000, 100_000 })
        {
            var rng = new Random(11);
            string Question(int i) => $"How do I {words[rng.Next(words.Length)]} my {words[rng.Next(words.Length)]} for the {words[rng.Next(words.Length)]} {words[rng.Next(words.Length)]} of item {i}?";
            var cache = new SemanticResponseCache(new SemanticCacheOptions { MaxEntries = 1_000_000, Ttl = TimeSpan.FromDays(1) }, new HashedNGramEmbeddingGenerator(), TimeProvider.System);
            var answer = new CachedResponse([1], "application/json", "m", 0.001m, 1, 1, TimeProvider.System.GetUtcNow());
            var stored = new string[n];
            for (var i = 0; i < n; i++) cache.AddAsync("p", stored[i] = Question(i), answer).GetAwaiter().GetResult();
            var queries = Enumerable.Range(0, 5000).Select(i => i % 2 == 0 ? stored[rng.Next(n)].Replace("How do I", "how can i") : Question(n + i)).ToArray();
            foreach (var q in queries.Take(500)) cache.LookupAsync("p", q).GetAwaiter().GetResult(); // warm up
            var times = new double[queries.Length];
            for (var i = 0; i < queries.Length; i++)
            {
                var t0 = Stopwatch.GetTimestamp();
                cache.LookupAsync("p", queries[i]).GetAwaiter().GetResult();
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            Array.Sort(times);
            Console.WriteLine($"entries {n,7:N0}: p50 {times[times.Length / 2]:F3} ms, p99 {times[(int)(times.Length * 0.99)]:F3} ms, max {times[^1]:F3} ms ({queries.Length:N0} lookups)");
        }
    }
}
