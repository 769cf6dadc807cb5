using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Pipeline;

/// <summary>Where an edit is applied: the upstream's wire format and the model of this attempt (a fallback may change it).</summary>
public readonly record struct EditTarget(bool Anthropic, string Model, LeverCall Call, CancellationToken CancellationToken);

/// <summary>
/// A change a stage asks for, applied by the face to what goes upstream: to the request body in the upstream's wire
/// format (the gateway, once per attempt, after translation) or to <see cref="ChatOptions"/> (the .NET library).
/// </summary>
public interface IRequestEdit
{
    /// <summary>Applies the edit to the body; true when it changed anything.</summary>
    bool Apply(JsonObject body, in EditTarget target);

    /// <summary>Applies the edit to a .NET chat call's options (the default: nothing to change there).</summary>
    void Apply(ChatOptions options, in EditTarget target) { }

    /// <summary>Applies the edit to a .NET chat call's messages and options (the default: the options only).</summary>
    void Apply(ChatCallEdit call, in EditTarget target) => Apply(call.Options, target);
}

/// <summary>
/// A .NET chat call as an edit changes it: a copy of the caller's messages (replace an element to change it, never the
/// caller's own objects) and options, and how the inner client marks a prompt-cache breakpoint on a content (null: it
/// cannot; e.g. the Anthropic SDK's <c>anthropic:cache_control</c> property).
/// </summary>
public sealed class ChatCallEdit(List<ChatMessage> messages, ChatOptions options, Func<AIContent, AIContent>? markBreakpoint)
{
    public List<ChatMessage> Messages { get; } = messages;
    public ChatOptions Options { get; } = options;
    /// <summary>Returns a copy of the content carrying a cache breakpoint, or the content itself when it cannot carry one.</summary>
    public Func<AIContent, AIContent>? MarkBreakpoint { get; } = markBreakpoint;
}

/// <summary>The edits of one call, in the order the stages asked for them. Empty: the caller's bytes go upstream untouched.</summary>
public sealed class RequestEdits
{
    private List<IRequestEdit>? _edits;

    public bool Any => _edits is { Count: > 0 };

    public void Add(IRequestEdit edit) => (_edits ??= []).Add(edit);

    /// <summary>No edits again (a reused call).</summary>
    public void Clear() => _edits?.Clear();

    /// <summary>Applies every edit to <paramref name="body"/>; true when any changed it.</summary>
    public bool ApplyTo(JsonObject body, in EditTarget target)
    {
        if (_edits is null) return false;
        var changed = false;
        foreach (var e in _edits) changed |= e.Apply(body, target);
        return changed;
    }

    public void ApplyTo(ChatOptions options, in EditTarget target)
    {
        if (_edits is null) return;
        foreach (var e in _edits) e.Apply(options, target);
    }

    public void ApplyTo(ChatCallEdit call, in EditTarget target)
    {
        if (_edits is null) return;
        foreach (var e in _edits) e.Apply(call, target);
    }
}
