using System.ClientModel;
using System.ClientModel.Primitives;
using System.ComponentModel;
using Anthropic;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Extensions.AI;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Simulator;
using Bursar.Storage.Sqlite;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenAI;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The two faces are one core: the same tagged workload (plain, streamed, tools, prompt caching, a cache hit, a
/// routed call, a refusal) through the gateway and through <c>UseBursar()</c>, both over the official OpenAI and
/// Anthropic .NET SDKs' chat clients and the Simulator, leaves the same ledger rows field by field.
/// </summary>
public sealed class FaceParityTests : IAsyncLifetime
{
    private static readonly string[] Settings =
    [
        "Bursar:Routing:Routes:0:Name=classify", "Bursar:Routing:Routes:0:Task=classification", "Bursar:Routing:Routes:0:Model=gpt-4o-mini", "Bursar:Routing:Routes:0:MaxTokens=16",
        "Bursar:Runs:MaxTurns=50",
    ];

    private readonly string _gatewayDir = Path.Combine(Path.GetTempPath(), "bursar-parity-gw-" + Guid.NewGuid().ToString("N"));
    private readonly string _libraryDir = Path.Combine(Path.GetTempPath(), "bursar-parity-lib-" + Guid.NewGuid().ToString("N"));
    private Microsoft.AspNetCore.Builder.WebApplication _gateway = null!;
    private ServiceProvider _library = null!;
    private string _url = "";
    private string _key = "";

    public async Task InitializeAsync()
    {
        _gateway = GatewayHost.Build(["--urls=http://127.0.0.1:0", $"--Bursar:DataDirectory={_gatewayDir}", "--Bursar:Providers:BaseRetryDelay=00:00:00.010", .. Settings.Select(s => "--" + s)],
            b => b.Logging.SetMinimumLevel(LogLevel.Warning));
        await _gateway.StartAsync();
        _url = _gateway.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var (key, secret) = KeyFactory.Create(TimeProvider.System, team: null, allowedCustomers: ["*"]);
        await _gateway.Services.GetRequiredService<SqliteStore>().AddAsync(key, default);
        _key = secret;
        var settings = Settings.Select(s => s.Split('=', 2)).ToDictionary(p => p[0], p => (string?)p[1]);
        settings["Bursar:DataDirectory"] = _libraryDir;
        _library = new ServiceCollection().AddBursar(settings).BuildServiceProvider();
        foreach (var sp in new IServiceProvider[] { _gateway.Services, _library })
        {
            var budget = new BudgetDefinition { Id = "tiny", Scope = BudgetScope.Customer, Value = "tiny", Period = BudgetPeriod.Day, LimitUsd = 0.000001m };
            await sp.GetRequiredService<SqliteStore>().UpsertBudgetAsync(budget, default);
            await sp.GetRequiredService<BudgetManager>().ReloadAsync(default);
        }
    }

    public async Task DisposeAsync()
    {
        await _gateway.StopAsync();
        await _gateway.DisposeAsync();
        await _library.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var d in new[] { _gatewayDir, _libraryDir }) try { Directory.Delete(d, true); } catch (IOException) { }
    }

    /// <summary>The caller opts into the exact cache (the gateway's <c>x-bursar-cache: on</c>, the library's <c>bursar.cache</c>).</summary>
    private static readonly AsyncLocal<bool> CacheOn = new();

    /// <summary>Bursar's tags as the gateway takes them: x-bursar-* headers, here from the same ambient scope the library reads.</summary>
    private sealed class ScopeHeaders : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            foreach (var tag in new[] { "feature", "customer", "team", "task", "run" })
                if (BursarScope.Tag(tag) is { } v) request.Headers.Add("x-bursar-" + tag, v);
            if (CacheOn.Value) request.Headers.Add("x-bursar-cache", "on");
            return base.SendAsync(request, cancellationToken);
        }
    }

    private static ProviderSimulator NewSimulator() => new(new SimulatorOptions(), TimeProvider.System, new PriceCatalog(PriceFiles.LoadBuiltIn()), new TokenCounter());

    /// <summary>The gateway face: the SDK pointed at Bursar's endpoint, tags as headers.</summary>
    private IChatClient ViaGateway(string sdk, string model) => sdk == "anthropic"
        ? new AnthropicClient { ApiKey = _key, BaseUrl = _url, MaxRetries = 0, HttpClient = new HttpClient(new ScopeHeaders { InnerHandler = new HttpClientHandler() }) }.AsIChatClient(model, defaultMaxOutputTokens: 1024)
        : new OpenAIClient(new ApiKeyCredential(_key), new OpenAIClientOptions { Endpoint = new Uri(_url + "/v1"), RetryPolicy = new ClientRetryPolicy(0), Transport = new HttpClientPipelineTransport(new HttpClient(new ScopeHeaders { InnerHandler = new HttpClientHandler() })) })
            .GetChatClient(model).AsIChatClient();

    /// <summary>The library face: the SDK pointed at the provider (here its Simulator), Bursar around it.</summary>
    private IChatClient ViaLibrary(string sdk, string model, ProviderSimulator simulator)
    {
        var handler = new SimulatorHttpHandler(simulator);
        IChatClient inner = sdk == "anthropic"
            ? new AnthropicClient { ApiKey = "sim", BaseUrl = "http://simulator.local", MaxRetries = 0, HttpClient = new HttpClient(handler) }.AsIChatClient(model, defaultMaxOutputTokens: 1024)
            : new OpenAIClient(new ApiKeyCredential("sim"), new OpenAIClientOptions { Endpoint = new Uri("http://simulator.local/v1"), RetryPolicy = new ClientRetryPolicy(0), Transport = new HttpClientPipelineTransport(new HttpClient(handler)) })
                .GetChatClient(model).AsIChatClient();
        return new ChatClientBuilder(inner).UseBursar(o => o.ProviderName = sdk + " (simulator)").Build(_library);
    }

    private static async Task WorkloadAsync(Func<string, string, IChatClient> client)
    {
        var longSystem = string.Join(" ", Enumerable.Repeat("You answer questions about the company's billing rules, precisely and briefly, citing the rule.", 80));
        var weather = AIFunctionFactory.Create([Description("The weather in a city")] (string city) => $"Sunny in {city}", "get_weather");
        foreach (var sdk in new[] { "openai", "anthropic" })
        {
            var model = sdk == "anthropic" ? "claude-haiku-4-5" : "gpt-4o";
            using (BursarScope.Begin(feature: $"{sdk}-plain", customer: "acme"))
                await client(sdk, model).GetResponseAsync("Say hello in three languages.");
            using (BursarScope.Begin(feature: $"{sdk}-stream"))
                await foreach (var _ in client(sdk, model).GetStreamingResponseAsync("Tell me a short story about a lighthouse.")) { }
            using (BursarScope.Begin(feature: $"{sdk}-tools", run: $"{sdk}-run"))
            {
                var tools = new ChatClientBuilder(client(sdk, model)).UseFunctionInvocation().Build();
                await tools.GetResponseAsync("What is the weather in Paris? Use the tool.", new ChatOptions { Tools = [weather], ToolMode = ChatToolMode.RequireAny });
            }
            using (BursarScope.Begin(feature: $"{sdk}-prompt-cache"))
            {
                for (var i = 0; i < 2; i++)
                {
                    var system = new ChatMessage(ChatRole.System, longSystem);
                    if (sdk == "anthropic") system.Contents[0].WithCacheControl(new Anthropic.Models.Messages.CacheControlEphemeral());
                    await client(sdk, model).GetResponseAsync([system, new ChatMessage(ChatRole.User, "Which rule covers refunds?")]);
                }
            }
            // opted in: the Anthropic SDK's chat client (13.12) does not send ChatOptions.Temperature, so temperature 0 alone is deterministic only to the library
            using (BursarScope.Begin(feature: $"{sdk}-cache-hit"))
            {
                CacheOn.Value = true;
                for (var i = 0; i < 2; i++) await client(sdk, model).GetResponseAsync("What is the capital of France?", new ChatOptions { Temperature = 0, AdditionalProperties = new() { ["bursar.cache"] = "on" } });
                CacheOn.Value = false;
            }
            using (BursarScope.Begin(feature: $"{sdk}-refused", customer: "tiny"))
                await Assert.ThrowsAnyAsync<Exception>(() => client(sdk, model).GetResponseAsync("Write an essay."));
        }
        using (BursarScope.Begin(feature: "routed", task: "classification"))
            await client("openai", "gpt-4o").GetResponseAsync("Is this review positive? 'Great product.'");
    }

    private static async Task<IReadOnlyList<LedgerRecord>> LedgerAsync(IServiceProvider sp, int count)
    {
        var store = sp.GetRequiredService<SqliteStore>();
        IReadOnlyList<LedgerRecord> rows = [];
        for (var i = 0; i < 200 && rows.Count < count; i++)
        {
            rows = await store.ReadAsync(new LedgerQuery { Limit = 10_000 }, default);
            if (rows.Count < count) await Task.Delay(25);
        }
        return rows;
    }

    /// <summary>What must agree between the faces (ids, times, keys and the face's own name differ by nature).</summary>
    private static object Fields(LedgerRecord r) => new
    {
        r.Feature, r.Team, r.Customer, r.Task, r.RunId, r.RequestedModel, r.ServedModel, r.Route, r.Provider, r.Streamed,
        r.InputTokens, r.CacheReadTokens, r.CacheWrite5mTokens, r.CacheWrite1hTokens, r.OutputTokens, r.ReasoningTokens, r.UsageEstimated,
        r.Priced, r.Cost, r.CounterfactualCost, r.SavingResponseCache, r.SavingPromptCache, r.SavingRouting,
        r.RoutingReason, r.Outcome, r.StatusCode, r.ErrorType, r.PrefixTokens, r.PrefixHash,
    };

    [Fact]
    public async Task The_same_workload_through_the_gateway_and_through_UseBursar_leaves_the_same_ledger_rows()
    {
        var gatewaySimulator = _gateway.Services.GetRequiredService<ProviderSimulator>();
        var librarySimulator = NewSimulator();
        _ = gatewaySimulator;
        await WorkloadAsync(ViaGateway);
        await WorkloadAsync((sdk, model) => ViaLibrary(sdk, model, librarySimulator));
        var viaGateway = await LedgerAsync(_gateway.Services, 21);
        var viaLibrary = await LedgerAsync(_library, 21);
        Assert.Equal(viaGateway.Count, viaLibrary.Count);
        // paired by content, not by time: two calls in the same millisecond have no reliable order
        static string Key(object fields) => System.Text.Json.JsonSerializer.Serialize(fields);
        var g = viaGateway.Select(Fields).OrderBy(Key, StringComparer.Ordinal).ToArray();
        var l = viaLibrary.Select(Fields).OrderBy(Key, StringComparer.Ordinal).ToArray();
        var differences = new List<string>();
        for (var i = 0; i < g.Length; i++)
        {
            foreach (var p in g[i].GetType().GetProperties())
            {
                var (a, b) = (p.GetValue(g[i]), p.GetValue(l[i]));
                if (!Equals(a, b)) differences.Add($"row {i} ({g[i].GetType().GetProperty("Feature")!.GetValue(g[i])}) {p.Name}: gateway {a ?? "null"}, library {b ?? "null"}");
            }
        }
        Assert.True(differences.Count == 0, string.Join("\n", differences));
        // the workload did exercise every lever it names
        Assert.Contains(viaLibrary, r => r.Provider == "bursar-cache" && r.SavingResponseCache > 0);
        Assert.Contains(viaLibrary, r => r.SavingPromptCache > 0);
        Assert.Contains(viaLibrary, r => r.SavingRouting > 0 && r.Route == "classify");
        Assert.Contains(viaLibrary, r => r.Outcome == "refused" && r.ErrorType == "budget_exceeded");
        Assert.Contains(viaLibrary, r => r.Streamed);
        Assert.Contains(viaLibrary, r => r.FinishReason is "tool_calls" or "tool_use");
    }
}
