using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;

namespace Bursar.Core.Routing;

/// <summary>
/// The LLM classifier's own call, as every face records it: a ledger row of its own (task <c>routing-classifier</c>,
/// the caller's tags and route), charged to the caller's budgets: its tokens are part of what the routed call cost.
/// </summary>
public static class ClassifierCall
{
    public const string Task = "routing-classifier";

    /// <summary>The classifier call's <see cref="LeverCall"/>, attributed like the call it routes.</summary>
    public static LeverCall Begin(TimeProvider time, string dialect, string model, string? provider, CallAttribution attribution, string route) => new()
    {
        Id = Ledger.CallIds.New(time.GetUtcNow()), Started = time.GetUtcNow(), StartTimestamp = time.GetTimestamp(), Dialect = dialect,
        Attribution = attribution with { Task = Task }, RequestedModel = model, Provider = provider, Route = route, Model = model,
    };

    /// <summary>Writes the row and charges its cost to the caller's budgets.</summary>
    public static void Finish(LeverCall call, CallMeter meter, BudgetManager budgets, PriceCatalog catalog, CallAttribution attribution, string model)
    {
        var record = meter.Finish(call);
        if (record.Cost is { } cost && catalog.Find(model).Price is { } price)
            budgets.Charge(new BudgetSubject(attribution.KeyId, attribution.Team, attribution.Customer, attribution.Feature, price.Model), cost);
    }

    /// <summary>The request text the classifier is shown (at most <see cref="DifficultyPrompt.MaxPromptChars"/>).</summary>
    public static string Shown(string prompt) => prompt.Length > DifficultyPrompt.MaxPromptChars ? prompt[..DifficultyPrompt.MaxPromptChars] : prompt;

    /// <summary>The label of an answer, and how the routing reason says it.</summary>
    public static (string? Label, string Detail) Read(string model, string? answer)
    {
        var label = DifficultyPrompt.Parse(answer);
        return label is null ? (null, $"classifier {model} answered '{answer}', not simple/medium/hard") : (label, $"'{label}' from {model}");
    }
}
