using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>
/// The LLM classifier of a ladder route in the library face: a one-word difficulty from the route's classifier model,
/// asked through the client that serves that model (<see cref="BursarChatClientOptions.ModelClients"/>, else the wrapped
/// one), at most 5 output tokens, temperature 0; its own ledger row and budget charge (<see cref="ClassifierCall"/>).
/// </summary>
internal sealed class ChatDifficultyClassifier(CallMeter meter, BudgetManager budgets, PriceCatalog catalog, TimeProvider time) : IDifficultyClassifier
{
    public async Task<(string? Label, string Detail)> ClassifyAsync(LeverCall routed, string model, string prompt, CallAttribution attribution, string route, CancellationToken cancellationToken)
    {
        if (routed.Host is not ChatExchange x) return (null, $"no chat client for the classifier model {model}");
        var inner = x.ClientOptions.ClientFor(model) ?? x.Inner;
        var call = ClassifierCall.Begin(time, "extensions-ai", model, x.Provider, attribution, route);
        string? answer = null;
        try
        {
            var response = await inner.GetResponseAsync(
                [new ChatMessage(ChatRole.System, DifficultyPrompt.Instruction), new ChatMessage(ChatRole.User, ClassifierCall.Shown(prompt))],
                new ChatOptions { ModelId = model, MaxOutputTokens = 5, Temperature = 0 }, cancellationToken).ConfigureAwait(false);
            ChatMetering.Read(call, response);
            answer = response.Text;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            call.Outcome = "upstream_error";
            call.ErrorMessage = e.Message;
            return (null, $"classifier {model} failed: {e.Message}");
        }
        finally
        {
            ClassifierCall.Finish(call, meter, budgets, catalog, attribution, model);
        }
        return ClassifierCall.Read(model, answer);
    }
}
