using Bursar.Core.Admission;
using Bursar.Core.Budgets;
using Bursar.Core.Limits;
using Bursar.Core.Pipeline;
using Bursar.Core.Runs;
using Bursar.Core.Tokens;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The pipeline itself: its fixed order, what it refuses to build, short circuits, and settling each call once.</summary>
public sealed class LeverPipelineTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private MeterKit _kit = null!;
    private BudgetManager _budgets = null!;
    private AdmissionControl _admission = null!;

    public async Task InitializeAsync()
    {
        _kit = new MeterKit(_time);
        _budgets = new BudgetManager(new MemoryBudgetStore(new BudgetDefinition { Id = "global", Scope = BudgetScope.Global, Period = BudgetPeriod.Day, LimitUsd = 5m }),
            new NoAlerts(), _time, NullLogger<BudgetManager>.Instance);
        await _budgets.ReloadAsync(default);
        _admission = new AdmissionControl(_budgets, new RateLimiter(_time), new RunTracker(new RunCapOptions(), _time), Levers.Catalog, IServedModels.Any, TokenCounter.Default, _time);
    }

    public async Task DisposeAsync() => await _kit.DisposeAsync();

    /// <summary>A stage that writes its name to a shared trace and, when told to, ends the call.</summary>
    private sealed class TraceStage(string name, List<string> trace, LeverRefusal? refuse = null) : ILeverStage
    {
        public string Name => name;

        public async ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
        {
            trace.Add(name);
            if (refuse is not null)
            {
                call.Refuse(refuse);
                return;
            }
            await next(call, cancellationToken);
            trace.Add("/" + name); // after the rest of the pipeline returned
        }
    }

    /// <summary>The face's provider call: answers like a provider, then seals the call just before its last byte.</summary>
    private sealed class SealingProvider(List<string>? trace = null) : IProviderCall
    {
        public readonly FakeProvider Inner = new();

        public async ValueTask CallAsync(LeverCall call, CancellationToken cancellationToken)
        {
            trace?.Add("provider");
            await Inner.Next(call, cancellationToken);
            await call.SealAsync();
        }
    }

    private LeverPipeline Build(IEnumerable<ILeverStage> stages, IProviderCall? provider = null) => new(stages, provider ?? new SealingProvider(), _kit.Meter, _admission);

    [Fact]
    public async Task Stages_run_in_the_fixed_order_whatever_order_they_were_registered_in()
    {
        var trace = new List<string>();
        var names = LeverPipeline.Order.ToArray();
        var shuffled = Enumerable.Reverse(names).Select(n => (ILeverStage)new TraceStage(n, trace)).ToArray();
        (shuffled[1], shuffled[4]) = (shuffled[4], shuffled[1]);
        var pipeline = Build(shuffled, new SealingProvider(trace));

        Assert.Equal(names, pipeline.Stages.Select(s => s.Name));
        await pipeline.RunAsync(Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi")), default);
        Assert.Equal([.. names, "provider", .. Enumerable.Reverse(names).Select(n => "/" + n)], trace);
    }

    [Fact]
    public void A_subset_of_stages_keeps_the_order()
    {
        var trace = new List<string>();
        var pipeline = Build([new TraceStage("admission", trace), new TraceStage("attribution", trace), new TraceStage("exact-cache", trace)]);
        Assert.Equal(["attribution", "exact-cache", "admission"], pipeline.Stages.Select(s => s.Name));
    }

    [Fact]
    public void A_stage_name_outside_the_order_throws_naming_it_and_the_valid_ones()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Build([new TraceStage("attribution", []), new TraceStage("context-trim", [])]));
        Assert.Contains("'context-trim'", e.Message);
        Assert.All(LeverPipeline.Order, name => Assert.Contains(name, e.Message));
    }

    [Fact]
    public void A_stage_registered_twice_throws_naming_it()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Build([new TraceStage("route", []), new TraceStage("attribution", []), new TraceStage("route", [])]));
        Assert.Contains("'route'", e.Message);
        Assert.Contains("twice", e.Message);
    }

    [Fact]
    public async Task A_stage_that_ends_the_call_skips_the_later_stages_and_the_provider_call()
    {
        var trace = new List<string>();
        var provider = new SealingProvider(trace);
        var pipeline = Build([new TraceStage("attribution", trace), new TraceStage("run-guard", trace, LeverRefusal.Forbidden("no")), new TraceStage("admission", trace)], provider);
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        await pipeline.RunAsync(call, default);

        Assert.Equal(["attribution", "run-guard", "/attribution"], trace);
        Assert.Equal(0, provider.Inner.Calls);
        Assert.Equal(403, call.Refusal!.Status);
        Assert.False(call.Sealed); // the face answers the refusal, then seals
    }

    [Fact]
    public async Task A_call_tracked_before_it_runs_is_sealed_into_exactly_one_ledger_record_even_when_sealed_twice()
    {
        var pipeline = Build([]);
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"), started: _time.GetUtcNow());
        pipeline.Track(call);
        call.Refuse(new LeverRefusal(401, "bad key"));
        await call.SealAsync();
        Assert.True(call.Sealed);
        await call.SealAsync();

        var records = await _kit.FlushAsync();
        var record = Assert.Single(records);
        Assert.Equal(1, _kit.Store.Writes);
        Assert.Equal((call.Id, "client_error", 401, "bad key"), (record.Id, record.Outcome, record.StatusCode, record.ErrorMessage));
        Assert.Equal(0m, record.Cost); // no tokens, no cost
    }

    [Fact]
    public async Task An_untracked_call_is_never_sealed()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        await call.SealAsync();
        Assert.False(call.Sealed);
        Assert.Empty(await _kit.FlushAsync());
    }

    [Fact]
    public async Task A_run_call_is_priced_its_reservation_settled_once_and_one_record_written_when_the_face_seals_again()
    {
        var provider = new SealingProvider();
        var pipeline = Build([new AdmissionStage(_admission)], provider);
        var call = Levers.Call(Levers.OpenAI("gpt-4o", "Summarize", maxTokens: 500), estimatedInputTokens: 1000);
        call.MaxTokens = 500;
        await pipeline.RunAsync(call, default);
        Assert.True(call.Sealed); // the provider call sealed it before its last byte
        await call.SealAsync(); // and the face's finally seals again

        var cost = Bursar.Core.Pricing.CostCalculator.Compute(Levers.Catalog.Find("gpt-4o").Price!, provider.Inner.Usage).Total;
        var status = Assert.Single(_budgets.Snapshot());
        Assert.Equal((cost, 0m), (status.SpentUsd, status.ReservedUsd)); // the worst case was replaced by the actual cost, once

        var record = Assert.Single(await _kit.FlushAsync());
        Assert.Equal((call.Id, "ok", "gpt-4o", cost), (record.Id, record.Outcome, record.ServedModel, record.Cost));
        Assert.Equal(1, _kit.Store.Writes);
    }

    [Fact]
    public async Task An_error_event_in_a_200_stream_is_recorded_as_an_upstream_error()
    {
        var pipeline = Build([]);
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        pipeline.Track(call);
        call.Summary.ErrorType = "overloaded_error";
        await call.SealAsync();
        var record = Assert.Single(await _kit.FlushAsync());
        Assert.Equal(("upstream_error", "overloaded_error"), (record.Outcome, record.ErrorType));
    }

    private sealed class AStage : ILeverStage
    {
        public string Name => "route";
        public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken) => next(call, cancellationToken);
    }

    private sealed class BStage : ILeverStage
    {
        public string Name => "attribution";
        public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken) => next(call, cancellationToken);
    }

    [Fact]
    public void The_builder_registers_each_stage_once_as_itself_and_as_a_lever_stage()
    {
        var services = new ServiceCollection();
        new LeverPipelineBuilder(services).Use<AStage>().Use<BStage>();
        using var sp = services.BuildServiceProvider();
        var stages = sp.GetServices<ILeverStage>().ToArray();
        Assert.Equal(["route", "attribution"], stages.Select(s => s.Name));
        Assert.Same(sp.GetRequiredService<AStage>(), stages[0]);
        Assert.Equal(["attribution", "route"], Build(stages).Stages.Select(s => s.Name));
    }
}
