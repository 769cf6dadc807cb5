// An agent loop under a run cap and a budget, metered into the Bursar ledger.
//   dotnet run --project samples/AgentLoop -- [--data-dir DIR]
// With OPENAI_API_KEY set it calls OpenAI (OPENAI_BASE_URL to change the endpoint); without it, Bursar's provider Simulator.
using System.ClientModel;
using System.ClientModel.Primitives;
using System.ComponentModel;
using Bursar.Core.Budgets;
using Bursar.Core.Ledger;
using Bursar.Extensions.AI;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;

var dataDir = args.SkipWhile(a => a != "--data-dir").Skip(1).FirstOrDefault() ?? ".bursar-sample";

// 1. Bursar's stores and levers: the ledger in dataDir (the same SQLite file `bursar report` reads), run caps of 4 turns
await using var services = new ServiceCollection()
    .AddBursar(new Dictionary<string, string?> { ["Bursar:DataDirectory"] = dataDir, ["Bursar:Runs:MaxTurns"] = "4" })
    .BuildServiceProvider();

// 2. a budget for the customer the agent works for: $0.0004 a day
var store = services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
await store.UpsertBudgetAsync(new BudgetDefinition { Id = "sample-acme", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Day, LimitUsd = 0.0004m }, default);
await services.GetRequiredService<BudgetManager>().ReloadAsync(default);

// 3. the provider: OpenAI when a key is set, else the Simulator in-process
var apiKey = Environment.GetEnvironmentVariable("OPENAI_API_KEY");
var openAIOptions = new OpenAIClientOptions();
if (Environment.GetEnvironmentVariable("OPENAI_BASE_URL") is { } baseUrl) openAIOptions.Endpoint = new Uri(baseUrl);
if (string.IsNullOrEmpty(apiKey))
{
    openAIOptions.Endpoint = new Uri("http://simulator.local/v1");
    openAIOptions.Transport = new HttpClientPipelineTransport(new HttpClient(new SimulatorHttpHandler(new ProviderSimulator(new SimulatorOptions()))));
}
IChatClient provider = new OpenAIClient(new ApiKeyCredential(string.IsNullOrEmpty(apiKey) ? "simulator" : apiKey), openAIOptions).GetChatClient("gpt-4o-mini").AsIChatClient();

// 4. tools run by FunctionInvokingChatClient; Bursar inside it, so every model call is one ledger row and one turn
var agent = new ChatClientBuilder(provider)
    .UseFunctionInvocation()
    .UseBursar(o => o.Feature = "sample-agent")
    .Build(services);

var weather = AIFunctionFactory.Create([Description("Today's weather in a city")] (string city) => $"{city}: 18°C, light rain", "get_weather");
var options = new ChatOptions { Tools = [weather], ToolMode = ChatToolMode.RequireAny, MaxOutputTokens = 300 }; // the output limit is what a budget reserves

string[] tasks = ["What should I wear in Oslo today?", "Plan a walk in Lisbon and in Porto this afternoon.", "Compare the weather of Paris, Rome, Madrid, Berlin and Vienna."];
var run = 0;
foreach (var task in tasks)
{
    var runId = $"sample-run-{++run}-{Guid.NewGuid():N}";
    using var scope = BursarScope.Begin(customer: "acme", run: runId);
    try
    {
        var answer = await agent.GetResponseAsync(task, options);
        Console.WriteLine($"run {run}: answered: {answer.Text.ReplaceLineEndings(" ")[..Math.Min(80, answer.Text.Length)]}");
    }
    catch (RunLimitExceededException e) { Console.WriteLine($"run {run}: stopped by the run cap: {e.Message}"); }
    catch (BudgetExceededException e) { Console.WriteLine($"run {run}: refused by the budget: {e.Message}"); }
}

// 5. what the ledger holds for this sample, per run
await services.GetRequiredService<LedgerWriter>().FlushAsync(); // the ledger is written off the call path: wait until this run's rows are in the store
var rows = (await store.ReadAsync(new LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Feature == "sample-agent").ToList();
Console.WriteLine();
Console.WriteLine($"{"run",-12} {"calls",5} {"refused",7} {"tokens in",9} {"tokens out",10} {"cost $",10}");
foreach (var g in rows.GroupBy(r => r.RunId))
    Console.WriteLine($"{(g.Key ?? "-")[..Math.Min(12, (g.Key ?? "-").Length)],-12} {g.Count(),5} {g.Count(r => r.Outcome == "refused"),7} {g.Sum(r => r.InputTokens + r.CacheReadTokens),9} {g.Sum(r => r.OutputTokens),10} {g.Sum(r => r.Cost ?? 0),10:F6}");
Console.WriteLine($"ledger rows: {rows.Count}, spent ${rows.Sum(r => r.Cost ?? 0):F6} (budget $0.0004/day for customer acme); see `bursar report --data-dir {dataDir}`");
