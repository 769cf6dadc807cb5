using BenchmarkDotNet.Attributes;
using Bursar.Core.Budgets;
using Bursar.Extensions.AI;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Benchmarks;

/// <summary>
/// What <c>UseBursar()</c> adds to a call: the lever pipeline with metering (every token class, exact cost, the
/// ledger record journaled) and budgets on (a global budget every call reserves against and settles), around an inner
/// client that answers at once. The ledger's store writes run in the background, off the call path.
/// </summary>
[MemoryDiagnoser]
public class LibraryBenchmarks
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-bench-lib-" + Guid.NewGuid().ToString("N"));
    private ServiceProvider _services = null!;
    private IChatClient _direct = null!;
    private IChatClient _bursar = null!;
    private readonly List<ChatMessage> _messages = [new(ChatRole.System, "You are a helpful assistant."), new(ChatRole.User, "What is the capital of France?")];
    private readonly ChatOptions _options = new() { MaxOutputTokens = 256 };

    /// <summary>Extra configuration for the library-loop diagnostics (<c>Bursar:Ledger:QueueCapacity=...</c>); empty in the benchmark.</summary>
    public static Dictionary<string, string?> Settings { get; } = [];

    /// <summary>library-loop diagnostics only: the ledger writer commits to a store that discards every batch (what the SQLite writer costs the caller).</summary>
    public static bool NullLedgerStore { get; set; }

    private sealed class DiscardingLedgerStore : Bursar.Core.Ledger.ILedgerStore
    {
        public Task WriteAsync(IReadOnlyList<Bursar.Core.Ledger.LedgerRecord> records, CancellationToken ct) => Task.CompletedTask;
        public Task<IReadOnlyList<Bursar.Core.Ledger.LedgerRecord>> ReadAsync(Bursar.Core.Ledger.LedgerQuery q, CancellationToken ct) => Task.FromResult<IReadOnlyList<Bursar.Core.Ledger.LedgerRecord>>([]);
        public Task<long> CountAsync(CancellationToken ct) => Task.FromResult(0L);
    }

    [GlobalSetup]
    public void Setup()
    {
        var settings = new Dictionary<string, string?>(Settings) { ["Bursar:DataDirectory"] = _dir };
        var collection = new ServiceCollection().AddBursar(settings);
        if (NullLedgerStore) collection.AddSingleton<Bursar.Core.Ledger.ILedgerStore>(new DiscardingLedgerStore());
        _services = collection.BuildServiceProvider();
        _services.GetRequiredService<SqliteStore>().UpsertBudgetAsync(new BudgetDefinition { Id = "bench", Scope = BudgetScope.Global, Period = BudgetPeriod.Month, LimitUsd = 1_000_000_000m }, default).GetAwaiter().GetResult();
        _services.GetRequiredService<BudgetManager>().ReloadAsync(default).GetAwaiter().GetResult();
        _direct = new NoOpChatClient();
        _bursar = new ChatClientBuilder(_direct).UseBursar(o => o.Feature = "bench").Build(_services);
        _bursar.GetResponseAsync(_messages, _options).GetAwaiter().GetResult();
    }

    /// <summary>The ledger writer behind the library (for the library-loop diagnostics).</summary>
    public Bursar.Core.Ledger.LedgerWriter Writer => _services.GetRequiredService<Bursar.Core.Ledger.LedgerWriter>();

    [GlobalCleanup]
    public void Cleanup()
    {
        _services.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Benchmark(Baseline = true)]
    public Task<ChatResponse> InnerClientAlone() => _direct.GetResponseAsync(_messages, _options);

    [Benchmark]
    public Task<ChatResponse> ThroughUseBursar() => _bursar.GetResponseAsync(_messages, _options);

    /// <summary>Answers every call at once with a fixed response and usage: what is measured is everything around it.</summary>
    private sealed class NoOpChatClient : IChatClient
    {
        private readonly ChatResponse _response = new(new ChatMessage(ChatRole.Assistant, "Paris."))
        {
            ModelId = "gpt-4o-mini", FinishReason = ChatFinishReason.Stop, ResponseId = "r",
            Usage = new UsageDetails { InputTokenCount = 24, OutputTokenCount = 3, TotalTokenCount = 27 },
        };

        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) => Task.FromResult(_response);

        public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            _response.ToChatResponseUpdates().ToAsyncEnumerable();

        public object? GetService(Type serviceType, object? serviceKey = null) =>
            serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("noop", null, "gpt-4o-mini") : null;

        public void Dispose() { }
    }
}

/// <summary>
/// <see cref="LibraryBenchmarks.ThroughUseBursar"/> with the ledger caught up before each iteration: the writer commits
/// every earlier record (<see cref="Bursar.Core.Ledger.LedgerWriter.FlushAsync"/>, not timed) so an iteration's 16,384 calls
/// fit the 65,536-record queue and none is replayed from the journal. The store writer still runs beside the calls; what
/// is left out is the backlog a tight loop of 100,000+ calls a second builds up over many iterations, which no LLM
/// workload does (the plain benchmark keeps it).
/// </summary>
[MemoryDiagnoser]
[InvocationCount(16_384)]
public class LibraryLedgerCaughtUpBenchmarks
{
    private readonly LibraryBenchmarks _library = new();

    [GlobalSetup]
    public void Setup() => _library.Setup();

    [GlobalCleanup]
    public void Cleanup() => _library.Cleanup();

    [IterationCleanup]
    public void CatchUp() => _library.Writer.FlushAsync().GetAwaiter().GetResult();

    [Benchmark]
    public Task<ChatResponse> ThroughUseBursar() => _library.ThroughUseBursar();
}
