using Bursar.Core.Budgets;
using Bursar.Core.Ledger;
using Bursar.Providers.Simulator;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Extensions.AI.Tests;

/// <summary>An app using Bursar.Extensions.AI: its own data directory, the official SDKs' chat clients over the Simulator, each request to the provider counted.</summary>
public sealed class LibraryHost : IAsyncDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-lib-" + Guid.NewGuid().ToString("N"));

    public LibraryHost(params string[] settings)
    {
        var config = new Dictionary<string, string?> { ["Bursar:DataDirectory"] = _dir };
        foreach (var s in settings)
        {
            var eq = s.IndexOf('=');
            config[s[..eq]] = s[(eq + 1)..];
        }
        Services = new ServiceCollection().AddBursar(config).BuildServiceProvider();
        Simulator = SdkClients.Simulator(options: SimulatorOptions);
    }

    public ServiceProvider Services { get; }
    public ProviderSimulator Simulator { get; }
    /// <summary>The Simulator's options: faults to inject into the next requests.</summary>
    public SimulatorOptions SimulatorOptions { get; } = new();
    /// <summary>Requests that reached the provider.</summary>
    public int ProviderRequests => _counter.Count;
    private readonly RequestCounter _counter = new();

    /// <summary>A chat client of the official SDK (<c>openai</c> or <c>anthropic</c>) under <c>UseBursar()</c>, with <paramref name="extra"/> around or inside it.</summary>
    public IChatClient Client(string sdk, string model, Action<BursarChatClientOptions>? configure = null, Func<ChatClientBuilder, ChatClientBuilder>? outer = null)
    {
        var inner = sdk == "anthropic" ? SdkClients.Anthropic(Simulator, model, new CountingHandler(_counter)) : SdkClients.OpenAI(Simulator, model, new CountingHandler(_counter));
        var builder = new ChatClientBuilder(inner);
        if (outer is not null) builder = outer(builder);
        return builder.UseBursar(configure).Build(Services);
    }

    public SqliteStore Store => Services.GetRequiredService<SqliteStore>();

    public async Task AddBudgetAsync(BudgetScope scope, string? value, decimal limitUsd)
    {
        await Store.UpsertBudgetAsync(new BudgetDefinition { Id = $"b-{Guid.NewGuid():N}", Scope = scope, Value = value, Period = BudgetPeriod.Day, LimitUsd = limitUsd }, default);
        await Services.GetRequiredService<BudgetManager>().ReloadAsync(default);
    }

    /// <summary>Waits until the ledger holds <paramref name="count"/> records for <paramref name="feature"/> (written off the call path).</summary>
    public async Task<IReadOnlyList<LedgerRecord>> LedgerAsync(string feature, int count = 1)
    {
        IReadOnlyList<LedgerRecord> rows = [];
        for (var i = 0; i < 200; i++)
        {
            rows = (await Store.ReadAsync(new LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Feature == feature).ToArray();
            if (rows.Count >= count) return rows;
            await Task.Delay(25);
        }
        throw new Xunit.Sdk.XunitException($"expected {count} ledger records for feature '{feature}', found {rows.Count}");
    }

    public async ValueTask DisposeAsync()
    {
        await Services.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class RequestCounter
    {
        public int Count;
    }

    private sealed class CountingHandler(RequestCounter counter) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref counter.Count);
            return base.SendAsync(request, cancellationToken);
        }
    }
}
