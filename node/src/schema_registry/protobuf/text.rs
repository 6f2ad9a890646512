//! Reading `.proto` text (proto2, proto3 and editions syntax) into the model.

use super::{
    Enum, Field, FieldType, Label, Message, ProtoFile, Reserved, Syntax, MAX_DEPTH,
    MAX_FIELD_NUMBER, SCALARS,
};

/// Parse `.proto` text into the model.
pub fn parse_text(text: &str) -> Result<ProtoFile, String> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let mut file = ProtoFile::default();
    while let Some(t) = p.next() {
        match t.as_str() {
            ";" => {}
            "syntax" => {
                p.expect("=")?;
                let version = p.string()?;
                file.syntax = if version == "proto3" {
                    Syntax::Proto3
                } else {
                    Syntax::Proto2
                };
                p.expect(";")?;
            }
            "edition" => {
                file.syntax = Syntax::Editions;
                p.skip_statement()?;
            }
            "import" => {
                let public = p.peek() == Some("public");
                if matches!(p.peek(), Some("public" | "weak")) {
                    p.next();
                }
                let name = p.string()?;
                if public {
                    file.public_imports.push(name.clone());
                }
                file.imports.push(name);
                p.expect(";")?;
            }
            "option" => p.skip_statement()?,
            "package" => {
                file.package = p.ident()?;
                p.expect(";")?;
            }
            "message" => file.messages.push(p.message()?),
            "enum" => file.enums.push(p.enumeration()?),
            "service" | "extend" => p.skip_block()?,
            other => return Err(format!("unexpected '{other}' at the top level")),
        }
    }
    Ok(file)
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            out.push(chars[start..i].iter().collect());
        } else if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == '+' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | '+'))
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
    /// Messages open around the current position.
    depth: usize,
}

impl Parser {
    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(t.is_some());
        t
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(format!("expected '{want}', found {other:?}")),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(t) if t.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '.') => Ok(t),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    /// A string literal's content (escapes are left as written).
    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(t) if t.len() >= 2 && (t.starts_with('"') || t.starts_with('\'')) => {
                Ok(t[1..t.len() - 1].to_string())
            }
            other => Err(format!("expected a string, found {other:?}")),
        }
    }

    /// An integer; one too large for an `i64` saturates (numbers are range-checked
    /// later, with a clearer message).
    fn number(&mut self) -> Result<i64, String> {
        let t = self.next().ok_or("expected a number")?;
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t.as_str()),
        };
        let n = if let Some(h) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i128::from_str_radix(h, 16)
        } else if digits.len() > 1 && digits.starts_with('0') {
            i128::from_str_radix(&digits[1..], 8)
        } else {
            digits.parse()
        }
        .or_else(|e| match e.kind() {
            std::num::IntErrorKind::PosOverflow => Ok(i128::MAX),
            _ => Err(format!("bad number '{t}'")),
        })?;
        let n = if neg { -n } else { n };
        Ok(i64::try_from(n).unwrap_or(if neg { i64::MIN } else { i64::MAX }))
    }

    /// `N`, `N to M` or `N to max`.
    fn range(&mut self, max: i64) -> Result<(i64, i64), String> {
        let start = self.number()?;
        if self.peek() != Some("to") {
            return Ok((start, start));
        }
        self.next();
        if self.peek() == Some("max") {
            self.next();
            return Ok((start, max));
        }
        Ok((start, self.number()?))
    }

    /// The rest of a `reserved` statement: ranges, and names (quoted, or bare in
    /// editions).
    fn reserved(&mut self, r: &mut Reserved, max: i64) -> Result<(), String> {
        loop {
            let t = self.peek().ok_or("unterminated reserved")?;
            if t.starts_with(['"', '\'']) {
                let name = self.string()?;
                r.names.push(name);
            } else if t.starts_with(|c: char| c.is_alphabetic() || c == '_') {
                let name = self.ident()?;
                r.names.push(name);
            } else {
                let range = self.range(max)?;
                r.ranges.push(range);
            }
            match self.next().as_deref() {
                Some(",") => {}
                Some(";") => return Ok(()),
                other => return Err(format!("expected ',' or ';' in reserved, found {other:?}")),
            }
        }
    }

    /// The rest of an `extensions` statement.
    fn extensions(&mut self, out: &mut Vec<(i64, i64)>) -> Result<(), String> {
        loop {
            let range = self.range(MAX_FIELD_NUMBER)?;
            out.push(range);
            if self.peek() != Some(",") {
                break;
            }
            self.next();
        }
        self.skip_field_options()?;
        self.expect(";")
    }

    /// Skip to the `;` ending a statement (braces in option values balanced).
    fn skip_statement(&mut self) -> Result<(), String> {
        let mut depth = 0i32;
        while let Some(t) = self.next() {
            match t.as_str() {
                "{" | "[" | "(" => depth += 1,
                "}" | "]" | ")" => depth -= 1,
                ";" if depth <= 0 => return Ok(()),
                _ => {}
            }
        }
        Err("unterminated statement".into())
    }

    /// Skip a `name ... { ... }` block.
    fn skip_block(&mut self) -> Result<(), String> {
        while let Some(t) = self.next() {
            if t == "{" {
                let mut depth = 1;
                while depth > 0 {
                    match self.next().as_deref() {
                        Some("{") => depth += 1,
                        Some("}") => depth -= 1,
                        Some(_) => {}
                        None => return Err("unterminated block".into()),
                    }
                }
                return Ok(());
            }
        }
        Err("unterminated block".into())
    }

    /// `[ ... ]` field options, if present.
    fn skip_field_options(&mut self) -> Result<(), String> {
        if self.peek() == Some("[") {
            let mut depth = 0;
            while let Some(t) = self.next() {
                match t.as_str() {
                    "[" => depth += 1,
                    "]" => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            return Err("unterminated field options".into());
        }
        Ok(())
    }

    fn field_type(&mut self, first: String) -> Result<FieldType, String> {
        if first == "map" {
            self.expect("<")?;
            let key = self.ident()?;
            self.expect(",")?;
            let value = self.ident()?;
            self.expect(">")?;
            return Ok(FieldType::Map(
                Box::new(classify(key)),
                Box::new(classify(value)),
            ));
        }
        Ok(classify(first))
    }

    fn field(&mut self, first: String, oneof: Option<String>) -> Result<Field, String> {
        let (label, type_token) = match first.as_str() {
            "optional" => (Label::Optional, self.ident()?),
            "required" => (Label::Required, self.ident()?),
            "repeated" => (Label::Repeated, self.ident()?),
            _ => (Label::Optional, first),
        };
        if type_token == "group" {
            return Err("proto2 groups are not analysed".into());
        }
        let ty = self.field_type(type_token)?;
        let name = self.ident()?;
        self.expect("=")?;
        let number = self.number()?;
        self.skip_field_options()?;
        self.expect(";")?;
        Ok(Field {
            name,
            number,
            label,
            ty,
            oneof,
        })
    }

    fn message(&mut self) -> Result<Message, String> {
        if self.depth >= MAX_DEPTH {
            return Err("messages nest too deeply".into());
        }
        self.depth += 1;
        let m = self.message_body();
        self.depth -= 1;
        m
    }

    fn message_body(&mut self) -> Result<Message, String> {
        let mut m = Message {
            name: self.ident()?,
            ..Default::default()
        };
        self.expect("{")?;
        loop {
            let t = self.next().ok_or("unterminated message")?;
            match t.as_str() {
                "}" => return Ok(m),
                ";" => {}
                "message" => m.messages.push(self.message()?),
                "enum" => m.enums.push(self.enumeration()?),
                "option" => self.skip_statement()?,
                "reserved" => self.reserved(&mut m.reserved, MAX_FIELD_NUMBER)?,
                "extensions" => self.extensions(&mut m.extensions)?,
                "extend" => self.skip_block()?,
                "oneof" => {
                    let name = self.ident()?;
                    self.expect("{")?;
                    loop {
                        let t = self.next().ok_or("unterminated oneof")?;
                        match t.as_str() {
                            "}" => break,
                            ";" => {}
                            "option" => self.skip_statement()?,
                            _ => {
                                let f = self.field(t, Some(name.clone()))?;
                                m.fields.push(f);
                            }
                        }
                    }
                    m.oneofs.push(name);
                }
                _ => {
                    let f = self.field(t, None)?;
                    m.fields.push(f);
                }
            }
        }
    }

    fn enumeration(&mut self) -> Result<Enum, String> {
        let mut e = Enum {
            name: self.ident()?,
            ..Default::default()
        };
        self.expect("{")?;
        loop {
            let t = self.next().ok_or("unterminated enum")?;
            match t.as_str() {
                "}" => return Ok(e),
                ";" => {}
                "option" => {
                    if self.peek() == Some("allow_alias") {
                        self.next();
                        self.expect("=")?;
                        e.allow_alias = self.next().as_deref() == Some("true");
                        self.expect(";")?;
                    } else {
                        self.skip_statement()?;
                    }
                }
                "reserved" => self.reserved(&mut e.reserved, i64::from(i32::MAX))?,
                _ => {
                    self.expect("=")?;
                    let number = self.number()?;
                    self.skip_field_options()?;
                    self.expect(";")?;
                    e.values.push((t, number));
                }
            }
        }
    }
}

fn classify(t: String) -> FieldType {
    if SCALARS.contains(&t.as_str()) {
        FieldType::Scalar(t)
    } else {
        FieldType::Named(t)
    }
}
